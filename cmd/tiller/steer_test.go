package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/steer"
)

// derived runs `tiller derive` on the shipped joy pairs at layer 1 of a fresh tiny model and
// returns the model folder and the vector's files (safetensors, GGUF).
func derived(t *testing.T) (model, vec, gguf string) {
	t.Helper()
	model = tinyModel(t)
	dir := t.TempDir()
	vec, gguf = filepath.Join(dir, "joy.safetensors"), filepath.Join(dir, "joy.gguf")
	code, stdout, stderr := tiller(t, "derive", "--model", model, "--pairs", "joy", "--layer", "1", "--out", vec, "--gguf", gguf)
	if code != 0 {
		t.Fatalf("derive: %s", stderr)
	}
	for _, want := range []string{"48 training pairs, 12 held out", "held acc", "wrote " + vec, "wrote " + gguf} {
		if !strings.Contains(stdout, want) {
			t.Errorf("derive output lacks %q:\n%s", want, stdout)
		}
	}
	if !strings.Contains(stderr, "llama.cpp's block indexing") {
		t.Errorf("no block-indexing note on GGUF export: %s", stderr)
	}
	return model, vec, gguf
}

// derive → steer → eval on a `tiller init` checkpoint; strength 0 prints what generate prints.
func TestDeriveSteerEval(t *testing.T) {
	model, vec, gguf := derived(t)
	v, err := steer.Load(vec)
	if err != nil {
		t.Fatal(err)
	}
	if v.Info.Method != "mean" || v.Info.Pairs != "steer/data/joy.jsonl" || v.Info.PairsSHA == "" || v.Layers[0].MeanNorm <= 0 || v.Info.Model != "m" {
		t.Errorf("vector info %+v", v.Info)
	}

	prompt := "How was your weekend?"
	code, plain, stderr := tiller(t, "generate", "--model", model, "--chat", "--max-tokens", "16", prompt)
	if code != 0 {
		t.Fatal(stderr)
	}
	code, zero, stderr := tiller(t, "steer", "--model", model, "--vector", vec+":0", "--max-tokens", "16", prompt)
	if code != 0 {
		t.Fatal(stderr)
	}
	if zero != plain {
		t.Errorf("strength 0:\n%q\nunsteered:\n%q", zero, plain)
	}
	// A sweep of two prompts at three strengths: one batch of six sequences; the strength-0
	// sections are the unsteered text.
	out := filepath.Join(t.TempDir(), "gen.jsonl")
	code, swept, stderr := tiller(t, "steer", "--model", model, "--vector", vec+":1", "--relative", "--sweep", "0,0.5,2", "--max-tokens", "16", "--out", out, prompt, "Hello!")
	if code != 0 {
		t.Fatal(stderr)
	}
	if !strings.Contains(stderr, "6 sequences (2 prompts × 3 strengths) in one batch") || !strings.Contains(swept, "=== prompt 2 · strength 2\n") {
		t.Errorf("sweep output:\n%s\n%s", swept, stderr)
	}
	if !strings.HasPrefix(swept, "=== prompt 1 · strength 0\n"+plain) {
		t.Errorf("strength 0 of the sweep is not the unsteered text:\n%q\nwant it to start with\n%q", swept, plain)
	}
	b, _ := os.ReadFile(out)
	if n := strings.Count(string(b), "\n"); n != 6 {
		t.Errorf("%d JSONL lines", n)
	}
	// Each line carries the generated ids, which decode to its text.
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var rec struct {
			Text     string  `json:"text"`
			Tokens   int     `json:"tokens"`
			TokenIDs []int32 `json:"token_ids"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil || len(rec.TokenIDs) != rec.Tokens || rec.Tokens == 0 {
			t.Errorf("JSONL line %s: %v; want token_ids of the token count", line, err)
		}
	}
	// The GGUF export steers too, with the block-indexing note, at absolute strengths: the format
	// records no residual norm for a relative strength to scale.
	if code, _, stderr := tiller(t, "steer", "--model", model, "--vector", gguf+":3", "--relative=false", "--positions", "generated", "--max-tokens", "4", prompt); code != 0 || !strings.Contains(stderr, "llama.cpp's block indexing") {
		t.Errorf("steer with GGUF: %d %s", code, stderr)
	}
	if code, _, stderr := tiller(t, "steer", "--model", model, "--vector", gguf+":0.3", "--max-tokens", "4", prompt); code != 1 || !strings.Contains(stderr, "--relative=false") {
		t.Errorf("steer with GGUF at a relative strength: %d %s; want an error saying --relative=false", code, stderr)
	}

	dir := filepath.Join(t.TempDir(), "eval")
	code, table, stderr := tiller(t, "eval", "--model", model, "--vector", vec, "--relative", "--sweep", "0,0.5,2", "--limit", "4", "--max-tokens", "8", "--bootstrap", "100", "--out", dir)
	if code != 0 {
		t.Fatal(stderr)
	}
	for _, want := range []string{"VADER compound", "joy words /100", "trust words /100", "1st-person /100", "perplexity", "\n0.5 "} {
		if !strings.Contains(table, want) {
			t.Errorf("eval table lacks %q:\n%s", want, table)
		}
	}
	for _, f := range []string{"generations.jsonl", "metrics.json", "dose-response.png", "dose-response.svg"} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
	var metrics struct {
		Settings  map[string]any
		Strengths []map[string]any
	}
	mb, _ := os.ReadFile(filepath.Join(dir, "metrics.json"))
	if err := json.Unmarshal(mb, &metrics); err != nil || len(metrics.Strengths) != 3 || metrics.Settings["prompts"] != "steer/data/prompts.jsonl" {
		t.Errorf("metrics.json: %v\n%s", err, mb)
	}
	gb, _ := os.ReadFile(filepath.Join(dir, "generations.jsonl"))
	if n := strings.Count(string(gb), "\n"); n != 12 {
		t.Errorf("%d generations, want 4 prompts × 3 strengths", n)
	}
}

// Conversion between the formats through derive --from, checked against the model.
func TestDeriveConvert(t *testing.T) {
	model, vec, gguf := derived(t)
	dir := t.TempDir()
	back := filepath.Join(dir, "back.safetensors")
	code, stdout, stderr := tiller(t, "derive", "--from", gguf, "--model", model, "--out", back)
	if code != 0 || !strings.Contains(stdout, "hook_resid_post at layers [1]") || !strings.Contains(stderr, "block indexing") {
		t.Fatalf("from GGUF: %d %s %s", code, stdout, stderr)
	}
	a, _ := steer.Load(vec)
	b, err := steer.Load(back)
	if err != nil {
		t.Fatal(err)
	}
	for i := range a.Layers[0].Values {
		if a.Layers[0].Values[i] != b.Layers[0].Values[i] {
			t.Fatalf("value %d: %g after the round trip, %g before", i, b.Layers[0].Values[i], a.Layers[0].Values[i])
		}
	}
	// A vector at layer 0's output cannot be a llama.cpp control vector.
	zero := filepath.Join(dir, "zero.safetensors")
	if code, _, stderr := tiller(t, "derive", "--model", model, "--pairs", "trust", "--layer", "0", "--out", zero); code != 0 {
		t.Fatal(stderr)
	}
	if code, _, stderr := tiller(t, "derive", "--from", zero, "--out", filepath.Join(dir, "zero.gguf")); code != 1 || !strings.Contains(stderr, "llama.cpp never steers") {
		t.Errorf("layer 0 to GGUF: %d %s", code, stderr)
	}
}

// Bad input: each is refused with one line that names what is wrong.
func TestSteerBadInput(t *testing.T) {
	model, vec, _ := derived(t)
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// A vector for another hidden size, and one for a model of another shape.
	c, err := llama.ReadConfig(model)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := steer.Load(vec)
	wide := *v
	wide.Layers = []steer.Layer{{Index: 1, Values: make([]float32, 80), MeanNorm: 1}}
	wide.Layers[0].Values[0] = 1
	wide.Info.ModelShape = ""
	widePath := filepath.Join(dir, "wide.safetensors")
	if err := wide.Save(widePath); err != nil {
		t.Fatal(err)
	}
	other := *c
	other.Layers = 32
	shaped := *v
	shaped.Info.ModelShape, shaped.Info.Model = steer.ModelShape(&other), "llama-3.1-8b"
	shapedPath := filepath.Join(dir, "other.safetensors")
	if err := shaped.Save(shapedPath); err != nil {
		t.Fatal(err)
	}
	goodPairs := `{"positive": "I am happy", "negative": "I am here"}` + "\n"
	badPairs := write("bad.jsonl", goodPairs+`{"positive": "x", "negative": `+"\n")
	noPairs := write("empty.jsonl", "\n\n")
	badLex := write("lex.tsv", "happy\tjoy\t1\nsad\tjoy\n")
	notGGUF := write("weird.gguf", "GGUF\x03\x00\x00\x00")
	cases := []struct {
		code int
		args []string
		want []string
	}{
		{1, []string{"steer", "--model", model, "--vector", widePath, "hi"}, []string{"wide.safetensors", "80 values, but the model's hidden_size is 64"}},
		{1, []string{"steer", "--model", model, "--vector", shapedPath, "hi"}, []string{"derived on llama-3.1-8b", "layers=32", "--other-model"}},
		{1, []string{"derive", "--model", model, "--pairs", "joy", "--layer", "2", "--out", filepath.Join(dir, "x.safetensors")}, []string{"--layer 2 is out of range: the model has layers 0 to 1"}},
		{1, []string{"derive", "--model", model, "--pairs", "joy", "--layers", "0-3", "--out", filepath.Join(dir, "x.safetensors")}, []string{"layer 2 is out of range"}},
		{1, []string{"steer", "--model", model, "--vector", vec, "--layers", "5", "hi"}, []string{"layer 5 is out of range"}},
		{1, []string{"derive", "--model", model, "--pairs", badPairs, "--layer", "1", "--out", filepath.Join(dir, "x.safetensors")}, []string{"bad.jsonl:2: not a JSON object"}},
		{1, []string{"derive", "--model", model, "--pairs", noPairs, "--layer", "1", "--out", filepath.Join(dir, "x.safetensors")}, []string{"empty.jsonl: no pairs"}},
		{1, []string{"derive", "--model", model, "--pairs", "glee", "--layer", "1", "--out", filepath.Join(dir, "x.safetensors")}, []string{"glee: no such file, and not a shipped pair set"}},
		{2, []string{"steer", "--model", model, "--vector", vec + ":lots", "hi"}, []string{`strength "lots"`, "is not a number"}},
		{2, []string{"steer", "--model", model, "--vector", vec + ":NaN", "hi"}, []string{`strength "NaN"`}},
		{2, []string{"steer", "--model", model, "--vector", vec, "--sweep", "0,two", "hi"}, []string{`--sweep: "two" is not a number`}},
		{2, []string{"steer", "--model", model, "hi"}, []string{"--vector is required"}},
		{2, []string{"steer", "--model", model, "--vector", vec}, []string{"no prompts given"}},
		{1, []string{"steer", "--model", model, "--vector", vec, "--positions", "locus", "hi"}, []string{"--positions locus needs the positions of a locus.json"}},
		{1, []string{"eval", "--model", model, "--vector", vec, "--lexicon", badLex, "--out", filepath.Join(dir, "ev")}, []string{"lex.tsv:2: 2 tab-separated fields, want 3"}},
		{1, []string{"steer", "--model", model, "--vector", notGGUF, "hi"}, []string{"weird.gguf", "needs 8 bytes at offset 8, the file has 8"}},
		{2, []string{"derive", "--model", model, "--pairs", "joy", "--out", filepath.Join(dir, "x.safetensors")}, []string{"give the layer"}},
		{2, []string{"derive", "--model", model, "--pairs", "joy", "--layer", "1", "--layers", "0-1", "--out", "x"}, []string{"one of --layer, --layers and --locus"}},
		{2, []string{"derive", "--model", model, "--pairs", "joy", "--layer", "1", "--hook", "attn.hook_z", "--out", "x"}, []string{"cannot carry a steering vector"}},
		{2, []string{"eval", "--model", model, "--vector", vec, "--sweep", "", "--out", "x"}, []string{"--sweep is required"}},
	}
	for _, tc := range cases {
		code, _, stderr := tiller(t, tc.args...)
		if code != tc.code {
			t.Errorf("%v: code %d, want %d; stderr %q", tc.args[:3], code, tc.code, stderr)
		}
		for _, w := range tc.want {
			if !strings.Contains(stderr, w) {
				t.Errorf("%v: stderr %q does not say %q", tc.args, stderr, w)
			}
		}
		if strings.Contains(stderr, "panic") {
			t.Errorf("%v: %s", tc.args, stderr)
		}
	}
	// --other-model lets the other-shaped vector through.
	if code, _, stderr := tiller(t, "steer", "--model", model, "--vector", shapedPath+":0.5", "--other-model", "--max-tokens", "2", "hi"); code != 0 {
		t.Errorf("--other-model: %s", stderr)
	}
}

func TestParseVectorSpec(t *testing.T) {
	dir := t.TempDir()
	colon := filepath.Join(dir, "a:b.safetensors")
	os.WriteFile(colon, nil, 0o644)
	for _, c := range []struct {
		in   string
		path string
		s    float64
		err  string
	}{
		{"joy.safetensors", "joy.safetensors", 1, ""},
		{"joy.safetensors:-2.5", "joy.safetensors", -2.5, ""},
		{"joy.safetensors:1e1", "joy.safetensors", 10, ""},
		{colon, colon, 1, ""},
		{"joy.safetensors:", "", 0, `strength "" of "joy.safetensors:" is not a number`},
		{"joy.safetensors:Inf", "", 0, "is not a number"},
	} {
		got, err := parseVectorSpec(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || got.path != c.path || got.strength != c.s {
			t.Errorf("%q: %+v %v", c.in, got, err)
		}
	}
	if ls, err := parseLayers("layers", "0,2-4", 6); err != nil || len(ls) != 4 || ls[3] != 4 {
		t.Errorf("layers %v %v", ls, err)
	}
	for _, bad := range []string{"4-2", "x", "1-", ""} {
		if _, err := parseLayers("layers", bad, 6); err == nil {
			t.Errorf("layers %q accepted", bad)
		}
	}
}

// A locus.json from attribution gives derive its hook and layer and steer its positions (STAR's
// localized injection), recorded in the vector so steer needs no --locus.
func TestLocus(t *testing.T) {
	model := tinyModel(t)
	dir := t.TempDir()
	locus := filepath.Join(dir, "locus.json")
	os.WriteFile(locus, []byte(`{"model": "m", "hook": "blocks.1.hook_resid_pre", "layer": 1, "positions_from_end": [0, 2], "score": 1.5}`), 0o644)
	vec := filepath.Join(dir, "v.safetensors")
	if code, _, stderr := tiller(t, "derive", "--model", model, "--pairs", "fear", "--locus", locus, "--positions", "last", "--out", vec); code != 0 {
		t.Fatal(stderr)
	}
	v, err := steer.Load(vec)
	if err != nil {
		t.Fatal(err)
	}
	if v.Hook != "hook_resid_pre" || v.Layers[0].Index != 1 || len(v.Info.FromEnd) != 2 || v.Info.FromEnd[1] != 2 {
		t.Errorf("vector at the locus: %s %v, positions %v", v.Hook, v.LayerIndices(), v.Info.FromEnd)
	}
	code, plain, _ := tiller(t, "steer", "--model", model, "--vector", vec+":0", "--positions", "locus", "--max-tokens", "8", "Hi!")
	code2, steered, stderr := tiller(t, "steer", "--model", model, "--vector", vec+":3", "--relative", "--positions", "locus", "--max-tokens", "8", "Hi!")
	if code != 0 || code2 != 0 || !strings.Contains(stderr, "positions locus") {
		t.Fatalf("steer at the locus: %d %d %s", code, code2, stderr)
	}
	if plain == steered {
		t.Error("steering at the locus positions changed nothing")
	}
	// An explicit --locus overrides, and a locus at a hook that cannot carry a vector is refused.
	if code, _, stderr := tiller(t, "steer", "--model", model, "--vector", vec, "--positions", "locus", "--locus", filepath.Join(dir, "absent.json"), "Hi"); code != 1 || !strings.Contains(stderr, "absent.json") {
		t.Errorf("missing locus: %d %s", code, stderr)
	}
	os.WriteFile(locus, []byte(`{"hook": "blocks.1.attn.hook_z", "layer": 1, "positions_from_end": [0]}`), 0o644)
	if code, _, stderr := tiller(t, "derive", "--model", model, "--pairs", "fear", "--locus", locus, "--out", vec); code != 1 || !strings.Contains(stderr, "cannot carry a steering vector") {
		t.Errorf("locus at attn.hook_z: %d %s", code, stderr)
	}
}
