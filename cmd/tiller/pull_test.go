package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tillerlm/tiller/llama/hub/hubtest"
)

// TestPullThenRunFromTheCache pulls a model from a stand-in of the Hub and runs it by its name,
// offline, as ORG/NAME and ORG/NAME@COMMIT.
func TestPullThenRunFromTheCache(t *testing.T) {
	dir := tinyModel(t)
	files := map[string][]byte{"pytorch_model.bin": []byte("pickle")}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = b
	}
	s := hubtest.New(t, "TestOrg/tiny", files, "model.safetensors")
	cache := t.TempDir()
	t.Setenv("HF_ENDPOINT", s.Hub.URL)
	t.Setenv("HF_HUB_CACHE", cache)
	t.Setenv("HF_TOKEN", "")

	code, _, stderr := tiller(t, "generate", "--model", "TestOrg/tiny", "--max-tokens", "3", "hi")
	if code != 1 || !strings.Contains(stderr, "tiller pull TestOrg/tiny") {
		t.Errorf("a model not yet pulled: code %d, %q", code, stderr)
	}
	code, stdout, stderr := tiller(t, "pull", "TestOrg/tiny")
	snap := filepath.Join(cache, "models--TestOrg--tiny", "snapshots", s.Commit)
	if code != 0 || strings.TrimSpace(stdout) != snap {
		t.Fatalf("pull: code %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if !strings.Contains(stderr, "pull TestOrg/tiny:") {
		t.Errorf("no progress on stderr: %q", stderr)
	}
	if _, err := os.Lstat(filepath.Join(snap, "pytorch_model.bin")); err == nil {
		t.Error("pull fetched pickled weights")
	}

	_, want, _ := tiller(t, "generate", "--model", dir, "--max-tokens", "5", "hello")
	for _, name := range []string{"TestOrg/tiny", "TestOrg/tiny@main", "TestOrg/tiny@" + s.Commit} {
		code, got, stderr := tiller(t, "generate", "--model", name, "--max-tokens", "5", "hello")
		if code != 0 || got != want {
			t.Errorf("generate --model %s: code %d, %q, want %q (%s)", name, code, got, want, stderr)
		}
	}
	if code, stdout, _ := tiller(t, "inspect", "--model", "TestOrg/tiny"); code != 0 || !strings.Contains(stdout, snap) {
		t.Errorf("inspect --model TestOrg/tiny: code %d\n%s", code, stdout)
	}
	if code, _, stderr := tiller(t, "pull", "not a model"); code != 2 || !strings.Contains(stderr, "ORG/NAME") {
		t.Errorf("pull of a bad name: code %d, %q", code, stderr)
	}
	t.Setenv("HF_HUB_OFFLINE", "1")
	if code, _, stderr := tiller(t, "pull", "TestOrg/tiny"); code != 1 || !strings.Contains(stderr, "HF_HUB_OFFLINE=1 forbids downloads") {
		t.Errorf("pull with HF_HUB_OFFLINE=1: code %d, %q", code, stderr)
	}
	t.Setenv("HF_HUB_OFFLINE", "")
	s.Token = "hf_needed"
	if code, _, stderr := tiller(t, "pull", "TestOrg/tiny@main"); code != 1 || !strings.Contains(stderr, "HF_TOKEN") {
		t.Errorf("pull of a gated model without a token: code %d, %q", code, stderr)
	}
}
