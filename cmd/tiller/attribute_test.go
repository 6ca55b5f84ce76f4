package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tillerlm/tiller/llama/tokenizer/tokenizertest"

	"github.com/tillerlm/tiller/attrib"
)

// llama3Model writes a tiny random checkpoint with the Llama 3 vocabulary and tokenizer, so that
// the shipped task sets, whose pairs have equal lengths under that tokenizer, run unaligned. It
// skips without Meta's tokenizer ($TILLER_LLAMA3_TOKENIZER).
func llama3Model(t *testing.T) string {
	t.Helper()
	var cfg map[string]any
	b, err := os.ReadFile("testdata/tiny-config.json")
	if err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(b, &cfg)
	cfg["vocab_size"], cfg["bos_token_id"], cfg["eos_token_id"] = 128256, 128000, []int{128001, 128008, 128009}
	cfg["max_position_embeddings"], cfg["initializer_range"] = 2048, 0.02
	dir := t.TempDir()
	b, _ = json.Marshal(cfg)
	os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644)
	out := filepath.Join(dir, "m")
	if code, _, stderr := tiller(t, "init", "--config", filepath.Join(dir, "config.json"), "--tokenizer", tokenizertest.Llama3Path(t), "--out", out, "--seed", "2"); code != 0 {
		t.Fatalf("init: %s", stderr)
	}
	return out
}

// `tiller attribute` with the shipped joy set on a `tiller init` checkpoint writes every output.
func TestAttributeJoy(t *testing.T) {
	model := llama3Model(t)
	out := filepath.Join(t.TempDir(), "joy")
	code, stdout, stderr := tiller(t, "attribute", "--model", model, "--pairs", "../../attrib/tasks/joy.jsonl", "--out", out, "--limit", "8", "--verify", "12", "--star")
	if code != 0 {
		t.Fatalf("attribute: %s", stderr)
	}
	for _, w := range []string{"pairs: 8, metric logprob", "top nodes by |AtP|", "recommended locus: blocks.1.hook_resid_pre", "exact patching (12 nodes", "time: AtP"} {
		if !strings.Contains(stdout, w) {
			t.Errorf("stdout lacks %q:\n%s", w, stdout)
		}
	}
	if !strings.Contains(stderr, "attribute: 8/8 pairs scored") || !strings.Contains(stderr, "verify: pair 8/8") {
		t.Errorf("no progress on stderr:\n%s", stderr)
	}
	files := []string{"scores.json", "scores.csv", "locus.json"}
	for _, k := range []string{"resid_pre", "attn_out", "mlp_out", "head"} {
		files = append(files, "heatmap_"+k+".png", "heatmap_"+k+".svg")
	}
	for _, f := range files {
		if st, err := os.Stat(filepath.Join(out, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
	loc, err := attrib.ReadLocus(filepath.Join(out, "locus.json"))
	if err != nil {
		t.Fatal(err)
	}
	if loc.Hook != "blocks.1.hook_resid_pre" || loc.Layer != 1 || len(loc.FromEnd) == 0 || loc.Pairs != "../../attrib/tasks/joy.jsonl" || len(loc.PairsSHA256) != 64 || loc.Model != filepath.Base(model) || loc.Metric != "logprob" {
		t.Errorf("locus %+v", loc)
	}
}

// The byte-level tokenizer of a default `tiller init` gives the joy set's pairs different lengths:
// an error naming the line unless --align right.
func TestAttributeAlign(t *testing.T) {
	model := tinyModel(t)
	out := t.TempDir()
	code, _, stderr := tiller(t, "attribute", "--model", model, "--pairs", "../../attrib/tasks/joy.jsonl", "--out", out, "--limit", "3")
	if code != 1 || !strings.Contains(stderr, "joy.jsonl: line 1: clean is") || !strings.Contains(stderr, "--align right") {
		t.Errorf("unaligned: code %d, %q", code, stderr)
	}
	// The shipped set by name is the same file.
	code, stdout, stderr := tiller(t, "attribute", "--model", model, "--pairs", "joy", "--out", out, "--limit", "3", "--align", "right", "--verify", "none", "--nodes", "resid_pre,head")
	if code != 0 {
		t.Fatalf("aligned: %s", stderr)
	}
	var loc struct {
		Pairs string `json:"pairs"`
	}
	if b, err := os.ReadFile(filepath.Join(out, "locus.json")); err != nil || json.Unmarshal(b, &loc) != nil || loc.Pairs != "attrib/tasks/joy.jsonl" {
		t.Errorf("locus.json names the pairs %q (%v); want attrib/tasks/joy.jsonl", loc.Pairs, err)
	}
	if !strings.Contains(stdout, "recommended locus") || strings.Contains(stdout, "exact patching") {
		t.Errorf("stdout:\n%s", stdout)
	}
	if _, err := os.Stat(filepath.Join(out, "heatmap_attn_out.png")); err == nil {
		t.Error("--nodes resid_pre,head still drew attn_out")
	}
}

func TestAttributeBadInput(t *testing.T) {
	model := tinyModel(t)
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(content), 0o644)
		return p
	}
	good := write("good.jsonl", `{"clean": "abc", "corrupt": "abd", "metric": {"logit_diff": ["a", "b"]}}`+"\n")
	malformed := write("malformed.jsonl", `{"clean": "abc", "corrupt": "abd", "metric": {"logprob": "x"}}`+"\n"+`{"clean": "abc", "corrupt": `+"\n")
	unknown := write("unknown.jsonl", `{"clean": "abc", "corrupt": "abd", "metric": {"kl": "x"}}`+"\n")
	empty := write("empty.jsonl", "")
	vocab := write("vocab.jsonl", `{"clean": "abc", "corrupt": "abd", "metric": {"logit_diff": ["#512", "b"]}}`+"\n")
	multi := write("multi.jsonl", `{"clean": "abc", "corrupt": "abd", "metric": {"logit_diff": ["ab", "b"]}}`+"\n")
	length := write("length.jsonl", `{"clean": "abc", "corrupt": "abcd", "metric": {"logprob": "x"}}`+"\n")
	out := filepath.Join(dir, "out")
	cases := []struct {
		args []string
		code int
		want []string
	}{
		{[]string{"--out", out}, 2, []string{"--pairs is required"}},
		{[]string{"--pairs", good}, 2, []string{"--out is required"}},
		{[]string{"--pairs", good, "--out", out, "--align", "left"}, 2, []string{`align "left": want none or right`}},
		{[]string{"--pairs", good, "--out", out, "--verify", "some"}, 2, []string{`--verify "some"`}},
		{[]string{"--pairs", good, "--out", out, "--nodes", "resid_pre,neurons"}, 2, []string{`unknown node kind "neurons"`}},
		{[]string{"--pairs", good, "--out", out, "--dtype", "bf16"}, 2, []string{`--dtype "bf16"`}},
		{[]string{"--pairs", good, "--out", out, "extra"}, 2, []string{`unexpected argument "extra"`}},
		{[]string{"--pairs", malformed, "--out", out}, 1, []string{malformed + ":2:", "malformed JSON"}},
		{[]string{"--pairs", unknown, "--out", out}, 1, []string{unknown + ":1:", `unknown metric "kl"`}},
		{[]string{"--pairs", empty, "--out", out}, 1, []string{empty, "no pairs"}},
		{[]string{"--pairs", vocab, "--out", out}, 1, []string{vocab + ": line 1", `"#512" is not in the vocabulary`}},
		{[]string{"--pairs", multi, "--out", out}, 1, []string{multi + ": line 1", `"ab" is 2 tokens`}},
		{[]string{"--pairs", length, "--out", out}, 1, []string{length + ": line 1", "clean is 4 tokens and corrupt is 5", "--align right"}},
		{[]string{"--pairs", filepath.Join(dir, "absent.jsonl"), "--out", out}, 1, []string{"absent.jsonl"}},
		{[]string{"--pairs", "happiness", "--out", out}, 1, []string{"happiness: no such file, and not a shipped attribution set (shipped: joy, trust, sadness, anger)"}},
	}
	for _, c := range cases {
		args := append([]string{"attribute", "--model", model}, c.args...)
		code, _, stderr := tiller(t, args...)
		if code != c.code {
			t.Errorf("%v: code %d, want %d; %q", c.args, code, c.code, stderr)
		}
		for _, w := range c.want {
			if !strings.Contains(stderr, w) {
				t.Errorf("%v: stderr %q does not say %q", c.args, stderr, w)
			}
		}
		if c.code == 1 && strings.Count(strings.TrimSpace(stderr), "\n") > 0 {
			t.Errorf("%v: want one error line, got %q", c.args, stderr)
		}
	}
}
