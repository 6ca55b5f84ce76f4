package server

import (
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/llama/chat"
	"github.com/tillerlm/tiller/steer"
	"github.com/tillerlm/tiller/steer/data"
	"github.com/tillerlm/tiller/tensor"
)

// withConfig serves a second server on the fixture's model and engine, with cfg's extra settings.
func (f *fixture) withConfig(t *testing.T, cfg Config, wrap func(http.Handler) http.Handler) string {
	t.Helper()
	cfg.Name, cfg.Model, cfg.Tokenizer, cfg.Engine = "tiny", f.model, f.tok, f.eng
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var h http.Handler = srv
	if wrap != nil {
		h = wrap(srv)
	}
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	return hs.URL
}

func get(t *testing.T, url string, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultTransport.RoundTrip(req) // redirects are answers here, not followed
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// writeResult writes a scores.json (the head `tiller attribute` writes, then its grids) and a
// locus.json into dir.
func writeResult(t *testing.T, dir, metric string) []byte {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	scores := fmt.Sprintf(`{"model": "m", "pairs": "joy.jsonl", "pairs_sha256": "00", "align": "right", "dtype": "f32", "metric": %q,
 "atp_star": false, "layers": 2, "heads": 2, "kv_heads": 1, "n_pairs": 3, "positions": 3, "labels": ["a", "b", "c"],
 "clean_metric": -1, "corrupt_metric": -2, "node_kinds": ["resid_pre"], "mean": {"atp": {"resid_pre": [[0.1, 0.2, 0.3], [0.4, 0.5, -0.6]]}},
 "locus": null, "per_pair": []}`, metric)
	if err := os.WriteFile(filepath.Join(dir, "scores.json"), []byte(scores), 0o644); err != nil {
		t.Fatal(err)
	}
	locus := `{"model": "m", "hook": "blocks.1.hook_resid_pre", "layer": 1, "positions_from_end": [0], "score": -0.6, "metric": "logprob", "pairs": "joy.jsonl", "pairs_sha256": "00"}`
	if err := os.WriteFile(filepath.Join(dir, "locus.json"), []byte(locus), 0o644); err != nil {
		t.Fatal(err)
	}
	return []byte(scores)
}

type listing struct {
	Data []struct {
		Name   string `json:"name"`
		Metric string `json:"metric"`
		NPairs int    `json:"n_pairs"`
		Layers int    `json:"layers"`
		Kinds  []string
		Locus  *struct {
			Hook string `json:"hook"`
		} `json:"locus"`
		Error string `json:"error"`
	} `json:"data"`
	Folder    *string `json:"folder"`
	Truncated bool    `json:"truncated"`
}

func list(t *testing.T, url string) listing {
	t.Helper()
	resp, b := get(t, url+"/v1/attributions")
	var l listing
	if err := json.Unmarshal(b, &l); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /v1/attributions: %d %s", resp.StatusCode, b)
	}
	return l
}

// The attributions folder offers the results inside it, and nothing outside it: not through "..",
// not through a link that leads out, not a FIFO that would hang a reader.
func TestAttributionsConfined(t *testing.T) {
	f := newFixture(t, options{})
	base := t.TempDir()
	root := filepath.Join(base, "results")
	outside := filepath.Join(base, "secret")
	secret := writeResult(t, outside, "secret")
	joy := writeResult(t, filepath.Join(root, "joy"), "logprob")
	rootScores := writeResult(t, root, "logit_diff")
	writeResult(t, filepath.Join(root, "deep", "a", "b", "c"), "logprob")      // depth 4: listed
	writeResult(t, filepath.Join(root, "deep", "a", "b", "c", "d"), "logprob") // depth 5: beyond the listing
	writeResult(t, filepath.Join(root, ".hidden"), "logprob")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Symlink(filepath.Join(root, "joy"), filepath.Join(root, "link-in")))
	must(os.Symlink("joy", filepath.Join(root, "link-rel")))
	must(os.Symlink(outside, filepath.Join(root, "link-out")))
	must(os.Mkdir(filepath.Join(root, "file-out"), 0o755))
	must(os.Symlink(filepath.Join(outside, "scores.json"), filepath.Join(root, "file-out", "scores.json")))
	must(os.Mkdir(filepath.Join(root, "fifo"), 0o755))
	must(syscall.Mkfifo(filepath.Join(root, "fifo", "scores.json"), 0o644))
	must(os.Mkdir(filepath.Join(root, "bad"), 0o755))
	must(os.WriteFile(filepath.Join(root, "bad", "scores.json"), []byte("not JSON"), 0o644))

	url := f.withConfig(t, Config{AttributionDir: root}, nil)
	l := list(t, url)
	var names []string
	for _, d := range l.Data {
		names = append(names, d.Name)
	}
	slices.Sort(names)
	want := []string{"results", "results/bad", "results/deep/a/b/c", "results/joy", "results/link-in", "results/link-rel"}
	if !slices.Equal(names, want) || l.Truncated || l.Folder == nil || *l.Folder != "results" {
		t.Errorf("listed %v (truncated %v), want %v", names, l.Truncated, want)
	}
	for _, d := range l.Data {
		switch d.Name {
		case "results/joy":
			if d.Metric != "logprob" || d.NPairs != 3 || d.Layers != 2 || d.Locus == nil || d.Locus.Hook != "blocks.1.hook_resid_pre" || d.Error != "" {
				t.Errorf("joy: %+v", d)
			}
		case "results/bad":
			if !strings.Contains(d.Error, "scores.json") {
				t.Errorf("bad: error %q", d.Error)
			}
		}
	}

	for _, c := range []struct {
		name string
		code int
		body []byte
	}{
		{"results/joy", 200, joy},
		{"results/link-in", 200, joy},
		{"results/link-rel", 200, joy},
		{"results", 200, rootScores},
		{"results/link-out", 404, nil},
		{"results/file-out", 404, nil},
		{"results/fifo", 404, nil},
		{"results/missing", 404, nil},
		{"secret", 404, nil},
		{"results/", 404, nil},
		{"results//joy", 200, joy}, // cleaned by the mux to results/joy
		{"results/joy%5c..", 404, nil},
		{"results/..%2fsecret", 404, nil},
		{"..%2fsecret", 404, nil},
	} {
		resp, b := get(t, url+"/v1/attributions/"+c.name)
		for resp.StatusCode == http.StatusMovedPermanently || resp.StatusCode == http.StatusTemporaryRedirect { // the mux's own path cleaning
			resp, b = get(t, url+resp.Header.Get("Location"))
		}
		if resp.StatusCode != c.code || c.body != nil && string(b) != string(c.body) {
			t.Errorf("GET %s: %d %.120s, want %d", c.name, resp.StatusCode, b, c.code)
		}
		if strings.Contains(string(b), `"secret"`) && string(b) == string(secret) {
			t.Errorf("GET %s read the file outside the folder", c.name)
		}
		if c.code == 200 && resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("GET %s: Content-Type %q", c.name, resp.Header.Get("Content-Type"))
		}
	}
	for _, name := range []string{"results/..", "results/.", "results/a/../joy", "results/\x00", "results\\joy", "x/joy", ""} {
		if rel, ok := (&Server{cfg: Config{AttributionDir: root}}).resultPath(name); ok {
			t.Errorf("resultPath(%q) = %q, want refused", name, rel)
		}
	}
	if resp, _ := get(t, url+"/v1/attributions/results/joy", "Range", "bytes=0-9"); resp.StatusCode != http.StatusPartialContent {
		t.Errorf("a range: %d", resp.StatusCode)
	}
}

// A listing stops after attribListDirs folders and says so; a scores.json over the limit is refused
// before it is read.
func TestAttributionsBounded(t *testing.T) {
	f := newFixture(t, options{})
	root := t.TempDir()
	for i := range attribListDirs + 10 {
		if err := os.Mkdir(filepath.Join(root, fmt.Sprintf("run%03d", i)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeResult(t, filepath.Join(root, "run000"), "logprob")
	big := filepath.Join(root, "run001", "scores.json")
	writeResult(t, filepath.Dir(big), "logprob")
	if err := os.Truncate(big, 4096); err != nil { // sparse: larger than the limit below, on no disk
		t.Fatal(err)
	}
	url := f.withConfig(t, Config{AttributionDir: root, MaxAttributionBytes: 2048}, nil)
	l := list(t, url)
	if !l.Truncated || len(l.Data) != 2 {
		t.Errorf("%d results, truncated %v; want 2 and truncated", len(l.Data), l.Truncated)
	}
	base := filepath.Base(root)
	if resp, b := get(t, url+"/v1/attributions/"+base+"/run001"); resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(b), "4096 bytes") {
		t.Errorf("oversized scores.json: %d %s", resp.StatusCode, b)
	}
	if resp, _ := get(t, url+"/v1/attributions/"+base+"/run000"); resp.StatusCode != 200 {
		t.Errorf("small scores.json: %d", resp.StatusCode)
	}
	// Without a folder there is nothing to list or read.
	plain := f.withConfig(t, Config{}, nil)
	if l := list(t, plain); len(l.Data) != 0 || l.Folder != nil {
		t.Errorf("no folder: %+v", l)
	}
	if resp, b := get(t, plain+"/v1/attributions/x"); resp.StatusCode != 404 || !strings.Contains(string(b), "--attributions") {
		t.Errorf("no folder, read: %d %s", resp.StatusCode, b)
	}
	if code, out := f.post(t, "/v1/attributions", `{}`); code != http.StatusMethodNotAllowed {
		t.Errorf("POST /v1/attributions: %d %v", code, out)
	}
}

func TestScores(t *testing.T) {
	f := newFixture(t, options{})
	texts := []string{"I am so happy, I love this wonderful day!", "The meeting is at noon.", ""}
	b, _ := json.Marshal(map[string]any{"texts": texts})
	code, out := f.post(t, "/v1/scores", string(b))
	lb, file, _ := data.File(data.Lexicon)
	lx, err := steer.ParseLexicon(file, lb)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := out["data"].([]any)
	if code != 200 || len(got) != len(texts) || out["lexicon"] != file {
		t.Fatalf("%d %v", code, out)
	}
	for i, text := range texts {
		want := steer.Score(text, lx)
		g := got[i].(map[string]any)
		emo := g["emotion_per100"].(map[string]any)
		if g["words"] != float64(want.Words) || math.Abs(g["vader_compound"].(float64)-want.Compound) > 1e-12 ||
			g["first_person_per100"] != want.Pronouns || emo["joy"] != want.Emotions["joy"] || emo["trust"] != want.Emotions["trust"] {
			t.Errorf("text %d: %v, want %+v", i, g, want)
		}
	}
	if want := steer.Score(texts[0], lx); want.Compound <= 0.5 || want.Emotions["joy"] == 0 || want.Pronouns == 0 {
		t.Errorf("a joyful first-person text scores %+v", want)
	}
	many, _ := json.Marshal(map[string]any{"texts": make([]string, maxScoreTexts+1)})
	for _, c := range []struct{ body, param string }{
		{`{}`, "texts"},
		{`{"texts": "hi"}`, "texts"},
		{`{"texts": ["a"], "lexicon": "x"}`, "lexicon"},
		{string(many), "texts"},
	} {
		if code, out := f.post(t, "/v1/scores", c.body); code != http.StatusBadRequest || errParam(out) != c.param {
			t.Errorf("%.60s: %d, param %q, want %q", c.body, code, errParam(out), c.param)
		}
	}
	if code, _ := f.get(t, "/v1/scores"); code != http.StatusMethodNotAllowed {
		t.Errorf("GET /v1/scores: %d", code)
	}
}

// The page is served from the binary with a policy that lets it load only its own files; every
// other path goes to the API, whose key it still needs.
func TestWithUI(t *testing.T) {
	f := newFixture(t, options{})
	url := f.withConfig(t, Config{APIKey: "sesame"}, WithUI)
	resp, b := get(t, url+"/ui/")
	if resp.StatusCode != 200 || !strings.Contains(string(b), `<script type="module" src="app.js">`) ||
		!strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'none'") || resp.Header.Get("X-Frame-Options") != "DENY" {
		t.Errorf("GET /ui/: %d %v", resp.StatusCode, resp.Header)
	}
	if resp, _ := get(t, url+"/ui/app.js"); resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Type"), "javascript") {
		t.Errorf("GET /ui/app.js: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, p := range []string{"/", "/ui"} {
		if resp, _ := get(t, url+p); resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/ui/" {
			t.Errorf("GET %s: %d to %q", p, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	if resp, _ := get(t, url+"/ui/missing.js"); resp.StatusCode != 404 {
		t.Errorf("a missing file: %d", resp.StatusCode)
	}
	if resp, _ := get(t, url+"/v1/models"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the API without its key: %d", resp.StatusCode)
	}
	if resp, _ := get(t, url+"/v1/models", "Authorization", "Bearer sesame"); resp.StatusCode != 200 {
		t.Errorf("the API with its key: %d", resp.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodPost, url+"/ui/", strings.NewReader("{}"))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /ui/: %v %v", resp, err)
	}
}

// The page loads nothing from elsewhere: no URL in its files but the SVG namespace, and every file
// it names is embedded.
func TestUIFilesSelfContained(t *testing.T) {
	external := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}`)
	local := regexp.MustCompile(`(?:src|href)="([^"#]+)"|from "\./([^"]+)"`)
	err := fs.WalkDir(uiFiles, "ui", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := uiFiles.ReadFile(p)
		for _, m := range external.FindAllString(string(b), -1) {
			if m != "http://www.w3.org" {
				t.Errorf("%s refers to %s", p, m)
			}
		}
		for _, m := range local.FindAllStringSubmatch(string(b), -1) {
			name := m[1] + m[2]
			if _, err := uiFiles.Open("ui/" + strings.TrimPrefix(name, "./")); err != nil {
				t.Errorf("%s names %s, which is not embedded", p, name)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// "positions": "locus" steers only the prompt positions counted from its end, exactly as steer's
// own locus plan does (STAR's localized injection); a vector derived at a locus brings its own.
func TestLocusPositions(t *testing.T) {
	f := newFixture(t, options{})
	calm, err := steer.Load(filepath.Join(f.vectors, "calm.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	msgs := []chat.Message{{Role: "user", Content: "Hello there, how are you today?"}}
	ids, err := f.tok.EncodeChat(msgs, true)
	if err != nil {
		t.Fatal(err)
	}
	b := tensor.NewCPU(1)
	t.Cleanup(b.Close)
	plan := &steer.Plan{Vectors: []steer.Applied{{Name: "calm", Vector: calm, Strength: 60}}, Layers: []int{0}, Positions: "locus", FromEnd: []int{0, 3}}
	gen, _, err := steer.Generate(llama.NewRunner(f.model, b), plan, [][]int32{ids}, []float64{1}, steer.GenOptions{MaxTokens: 12})
	if err != nil {
		t.Fatal(err)
	}
	want := f.tok.Decode(gen[0][0].Tokens, true)
	req := `{"messages": [{"role": "user", "content": "Hello there, how are you today?"}], "max_tokens": 12, "temperature": 0, "steering": [%s]}`
	content := func(steering string) string {
		return f.chat(t, fmt.Sprintf(req, steering)).Choices[0].Message.Content
	}
	if got := content(`{"vector": "calm", "strength": 60, "layers": "0", "positions": "locus", "positions_from_end": [3, 0, 3]}`); got != want {
		t.Errorf("locus steering: %q, steer's locus plan %q", got, want)
	}
	if plain := content(`{"vector": "calm", "strength": 0}`); plain == want {
		t.Errorf("locus steering changed nothing: %q", plain)
	}
	if prompt := content(`{"vector": "calm", "strength": 60, "layers": "0", "positions": "prompt"}`); prompt == want {
		t.Errorf("locus steering is prompt steering: %q", prompt)
	}
	// A vector derived at a locus steers there by default, and /v1/vectors says where.
	calm.Info.FromEnd = []int{0, 3}
	if err := calm.Save(filepath.Join(f.vectors, "calmlocus.safetensors")); err != nil {
		t.Fatal(err)
	}
	if code, out := f.post(t, "/v1/vectors", `{"name": "calmlocus", "file": "calmlocus.safetensors"}`); code != 200 || fmt.Sprint(out["positions_from_end"]) != "[0 3]" {
		t.Errorf("loading a locus vector: %d %v", code, out)
	}
	if got := content(`{"vector": "calmlocus", "strength": 60, "layers": "0", "positions": "locus"}`); got != want {
		t.Errorf("the vector's own locus: %q, want %q", got, want)
	}
	for _, c := range []struct{ steering, param string }{
		{`{"vector": "joy", "strength": 6, "positions": "locus"}`, "steering[0].positions_from_end"},
		{`{"vector": "joy", "strength": 6, "positions": "all", "positions_from_end": [0]}`, "steering[0].positions_from_end"},
		{`{"vector": "joy", "strength": 6, "positions": "locus", "positions_from_end": [-1]}`, "steering[0].positions_from_end"},
		{`{"vector": "joy", "strength": 6, "positions": "locus", "positions_from_end": [512]}`, "steering[0].positions_from_end"},
		{`{"vector": "joy", "strength": 6, "positions": "locus", "positions_from_end": "x"}`, "steering.0.positions_from_end"},
		{`{"vector": "joy", "strength": 6, "positions": "somewhere"}`, "steering[0].positions"},
	} {
		if code, out := f.post(t, "/v1/chat/completions", fmt.Sprintf(req, c.steering)); code != http.StatusBadRequest || errParam(out) != c.param {
			t.Errorf("%s: %d, param %q, want %q", c.steering, code, errParam(out), c.param)
		}
	}
	many := make([]string, maxLocusPositions+1)
	for i := range many {
		many[i] = fmt.Sprint(i)
	}
	if code, out := f.post(t, "/v1/chat/completions", fmt.Sprintf(req, `{"vector": "joy", "strength": 6, "positions": "locus", "positions_from_end": [`+strings.Join(many, ",")+`]}`)); code != http.StatusBadRequest || !strings.Contains(errParam(out), "positions_from_end") {
		t.Errorf("%d positions: %d %v", len(many), code, out)
	}
}

// A folder of more entries than one listing reads stops the listing there, and says so.
func TestAttributionsEntriesBounded(t *testing.T) {
	defer func(n int) { attribListEntries = n }(attribListEntries)
	attribListEntries = 40
	f := newFixture(t, options{})
	root := t.TempDir()
	writeResult(t, filepath.Join(root, "a"), "logprob")
	for i := range attribListEntries {
		if err := os.WriteFile(filepath.Join(root, fmt.Sprintf("f%05d", i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeResult(t, filepath.Join(root, "z"), "logprob")
	l := list(t, f.withConfig(t, Config{AttributionDir: root}, nil))
	if !l.Truncated || len(l.Data) > 2 {
		t.Errorf("%d results, truncated %v; want the root's entries cut at %d", len(l.Data), l.Truncated, attribListEntries)
	}
}
