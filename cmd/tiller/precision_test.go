package main

import (
	"strings"
	"testing"
)

// --kv-cache, --compute and --deterministic: bad values, and bf16 compute with the deterministic
// mode (on by default for eval), are usage errors that name the flag; on the CPU the deterministic mode and an explicit f32 cache change no token of a
// greedy generation (the CPU's products keep each row's sums apart already; the chunks only fix
// which kernel runs).
func TestPrecisionFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"generate", "--model", "x", "--kv-cache", "f16", "hi"}, `--kv-cache "f16": want f32, bf16 or auto`},
		{[]string{"eval", "--model", "x", "--vector", "v.safetensors", "--compute", "bf16"}, "--compute bf16 rounds the prompt's products by batch"},
		{[]string{"generate", "--model", "x", "--compute", "bf16", "--deterministic", "hi"}, "add --deterministic=false"},
		{[]string{"generate", "--model", "x", "--deterministic=maybe", "hi"}, `invalid boolean value "maybe" for -deterministic`},
	} {
		code, _, stderr := tiller(t, c.args...)
		if code != 2 || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: code %d, stderr %q; want 2 and %q", c.args, code, stderr, c.want)
		}
	}
	model := tinyModel(t)
	gen := func(extra ...string) string {
		t.Helper()
		args := append([]string{"generate", "--model", model, "--temperature", "0", "--max-tokens", "24"}, extra...)
		code, out, stderr := tiller(t, append(args, "Hello there, how are you today?")...)
		if code != 0 {
			t.Fatalf("%v: code %d\n%s", extra, code, stderr)
		}
		return out
	}
	plain := gen()
	if plain == "" {
		t.Fatal("generate wrote nothing")
	}
	for _, extra := range [][]string{{"--deterministic"}, {"--kv-cache", "f32"}, {"--kv-cache", "auto", "--deterministic"}} {
		if got := gen(extra...); got != plain {
			t.Errorf("generate %v: %q, without it %q", extra, got, plain)
		}
	}
}
