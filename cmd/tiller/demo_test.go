package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tillerlm/tiller/llama/tinychat"
)

// demoData is where the demo's sets live, from this package's folder.
var demoData = filepath.Join("..", "..", "llama", "tinychat", "demo")

// TestDemoSteersTowardJoy runs `make demo`'s pipeline on the embedded model at two strengths with
// shorter replies, and checks the demo's claim: at the chosen strength (0.4 of the layer's mean
// residual norm) joy words and sentiment rise above the unsteered replies' with 95% intervals
// that do not overlap, while perplexity under the unsteered model stays within 2x. Everything is
// seeded, so the check is exact for this code and model, not a matter of luck.
func TestDemoSteersTowardJoy(t *testing.T) {
	t.Setenv("TILLER_CACHE", t.TempDir())
	out := t.TempDir()
	steps := [][]string{
		{"attribute", "--pairs", filepath.Join(demoData, tinychat.DemoAttributionFile), "--align", "right", "--out", filepath.Join(out, "attribution")},
		{"derive", "--pairs", filepath.Join(demoData, tinychat.DemoContrastFile), "--locus", filepath.Join(out, "attribution", "locus.json"), "--out", filepath.Join(out, "joy.safetensors")},
		{"eval", "--vector", filepath.Join(out, "joy.safetensors"), "--relative", "--sweep", "0,0.4", "--prompts", filepath.Join(demoData, tinychat.DemoPromptFile),
			"--max-tokens", "32", "--seed", "1", "--bootstrap", "1000", "--out", filepath.Join(out, "eval")},
	}
	for _, args := range steps {
		if code, _, stderr := tiller(t, args...); code != 0 {
			t.Fatalf("tiller %s: code %d\n%s", strings.Join(args, " "), code, stderr)
		}
	}
	data, err := os.ReadFile(filepath.Join(out, "eval", "metrics.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Strengths []struct {
			Strength float64 `json:"strength"`
			Metrics  map[string]struct {
				Value, Lo, Hi float64
			} `json:"metrics"`
		} `json:"strengths"`
	}
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	if len(m.Strengths) != 2 || m.Strengths[0].Strength != 0 || m.Strengths[1].Strength != 0.4 {
		t.Fatalf("metrics.json strengths: %+v", m.Strengths)
	}
	base, steered := m.Strengths[0].Metrics, m.Strengths[1].Metrics
	for _, name := range []string{"joy_per100", "vader_compound"} {
		t.Logf("%s: steered %.3f [%.3f, %.3f], unsteered %.3f [%.3f, %.3f]", name,
			steered[name].Value, steered[name].Lo, steered[name].Hi, base[name].Value, base[name].Lo, base[name].Hi)
		if steered[name].Lo <= base[name].Hi {
			t.Errorf("%s: steered %.3f [%.3f, %.3f] does not clear unsteered %.3f [%.3f, %.3f]", name,
				steered[name].Value, steered[name].Lo, steered[name].Hi, base[name].Value, base[name].Lo, base[name].Hi)
		}
	}
	if p0, p := base["perplexity"].Value, steered["perplexity"].Value; !(p > 0 && p <= 2*p0) {
		t.Errorf("perplexity %.2f steered vs %.2f unsteered: want within 2x", p, p0)
	}
	for _, f := range []string{"attribution/heatmap_resid_pre.png", "attribution/scores.json", "eval/dose-response.png", "eval/generations.jsonl"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Error(err)
		}
	}
}

// With no --model, commands run the embedded model, written out once into the cache folder.
func TestEmbeddedModelIsTheDefault(t *testing.T) {
	cache := t.TempDir()
	t.Setenv("TILLER_CACHE", cache)
	code, stdout, stderr := tiller(t, "inspect")
	if code != 0 || !strings.Contains(stdout, "6 layers, hidden 128") || !strings.Contains(stdout, cache) {
		t.Fatalf("inspect: code %d\n%s\n%s", code, stdout, stderr)
	}
	code, stdout, stderr = tiller(t, "generate", "--model", tinychat.ModelName, "--chat", "--temperature", "0", "--max-tokens", "24",
		"You know my husband Ben? He worked on the photo album last Saturday.")
	if code != 0 || !strings.Contains(stdout, "photo album") {
		t.Fatalf("generate: code %d, want a reply about the photo album\n%s\n%s", code, stdout, stderr)
	}
	dirs, err := os.ReadDir(cache)
	if err != nil || len(dirs) != 1 || !strings.HasPrefix(dirs[0].Name(), tinychat.ModelName+"-") {
		t.Fatalf("cache %s holds %v (%v); want one %s-HASH folder", cache, dirs, err, tinychat.ModelName)
	}
}
