package steer

import (
	"bufio"
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/llama/chat"
	"github.com/tillerlm/tiller/tensor/tensortest"

	"github.com/tillerlm/tiller/llama/tokenizer"
	"github.com/tillerlm/tiller/steer/data"
)

// Perplexity from the packed passes is what Runner.Score gives for each sequence alone.
func TestPerplexitiesMatchScore(t *testing.T) {
	tm := loadTiny(t, tinyDir(t, 0.3, nil))
	prompts := [][]int32{{256, 10, 20, 30}, {256, 99}, {256, 1, 2, 3, 4, 5, 6}, {256, 7}}
	conts := [][]int32{{40, 41, 42}, {5}, {}, {8, 9, 10, 11, 12, 13}}
	got, err := Perplexities(tm.r, prompts, conts, 12) // small passes: several of them
	if err != nil {
		t.Fatal(err)
	}
	for i := range prompts {
		if len(conts[i]) == 0 {
			if !math.IsNaN(got[i]) {
				t.Errorf("empty continuation: %g, want NaN", got[i])
			}
			continue
		}
		all := append(append([]int32(nil), prompts[i]...), conts[i]...)
		lp, _, err := tm.r.Score(all)
		if err != nil {
			t.Fatal(err)
		}
		var nll float64
		for _, x := range lp[len(prompts[i])-1:] {
			nll -= x
		}
		want := math.Exp(nll / float64(len(conts[i])))
		if math.Abs(got[i]-want) > 1e-4*want {
			t.Errorf("sequence %d: perplexity %g, Score gives %g", i, got[i], want)
		}
	}

	// On a device: the same perplexities, and every byte of the caches given back.
	d := tensortest.NewDevice(2)
	t.Cleanup(d.Close)
	r := llama.NewRunner(tm.m, d)
	if _, err := Perplexities(r, prompts, conts, 12); err != nil { // uploads the weights, which stay
		t.Fatal(err)
	}
	live := d.Live
	dev, err := Perplexities(r, prompts, conts, 12)
	if err != nil {
		t.Fatal(err)
	}
	if d.Live != live {
		t.Errorf("%d device allocations left behind", d.Live-live)
	}
	for i := range got {
		if math.Abs(dev[i]-got[i]) > 1e-5*got[i] {
			t.Errorf("sequence %d: perplexity %g on a device, %g on the CPU", i, dev[i], got[i])
		}
	}
}

// An evaluation end to end on a tiny model: one batch for the sweep, a record per prompt and
// strength, aggregates per strength, and the files it writes.
func TestEval(t *testing.T) {
	tm := loadTiny(t, tinyDir(t, 0.3, nil))
	c := tm.m.Config
	b, file, _ := data.File(data.Prompts)
	prompts, err := ParsePrompts(file, b)
	if err != nil {
		t.Fatal(err)
	}
	prompts = prompts[:5]
	ids := make([][]int32, len(prompts))
	for i, p := range prompts {
		if ids[i], err = tm.tok.EncodeText(tokenizer.Text{Messages: []chat.Message{{Role: "user", Content: p.Text.Raw}}}, true); err != nil {
			t.Fatal(err)
		}
	}
	lb, lf, _ := data.File(data.Lexicon)
	lx, err := ParseLexicon(lf, lb)
	if err != nil {
		t.Fatal(err)
	}
	plan := &Plan{Vectors: []Applied{{Name: "v", Vector: randomVector(c.Dim, 3, 1), Strength: 1}}, Positions: "all", Relative: true}
	sweep := []float64{0, 1, 4}
	res, err := Eval(tm.r, tm.tok, plan, prompts, ids, EvalOptions{Strengths: sweep, Gen: GenOptions{MaxTokens: 12}, Lexicon: lx, Resamples: 200})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Records) != 15 || len(res.Rows) != 3 || res.Stats.Sequences != 15 {
		t.Fatalf("%d records, %d rows, %d sequences", len(res.Records), len(res.Rows), res.Stats.Sequences)
	}
	keys := []string{}
	for _, m := range res.Metrics {
		keys = append(keys, m.Key)
	}
	if strings.Join(keys, ",") != "vader_compound,joy_per100,trust_per100,first_person_per100,perplexity,words" {
		t.Errorf("metrics %v", keys)
	}
	for k, row := range res.Rows {
		if row.Strength != sweep[k] {
			t.Errorf("row %d strength %g", k, row.Strength)
		}
		for _, key := range keys {
			iv := row.Metrics[key]
			if key == "perplexity" && iv.N == 0 {
				continue // every generation may have ended at once
			}
			if iv.N == 0 || iv.Lo > iv.Value+1e-9 || iv.Hi < iv.Value-1e-9 {
				t.Errorf("strength %g %s: %+v", row.Strength, key, iv)
			}
		}
	}
	// The perplexity of the unsteered generations is modest; steering at 4× the norm raises it.
	if p0, p4 := res.Rows[0].Metrics["perplexity"].Value, res.Rows[2].Metrics["perplexity"].Value; !(p4 > p0) {
		t.Errorf("perplexity %g unsteered, %g at strength 4", p0, p4)
	}
	var table bytes.Buffer
	res.Table(&table)
	if lines := strings.Split(strings.TrimSpace(table.String()), "\n"); len(lines) != 4 || !strings.Contains(lines[0], "VADER compound") || !strings.HasPrefix(lines[3], "4 ") {
		t.Errorf("table:\n%s", table.String())
	}

	dir := t.TempDir()
	if err := res.WriteGenerations(filepath.Join(dir, "g.jsonl")); err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(filepath.Join(dir, "g.jsonl"))
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"prompt", "prompt_text", "strength", "text", "tokens", "token_ids", "perplexity", "vader_compound", "first_person_per100", "emotion_per100", "words"} {
			if _, ok := rec[k]; !ok {
				t.Errorf("generation record lacks %q: %v", k, rec)
			}
		}
		if ids, _ := rec["token_ids"].([]any); float64(len(ids)) != rec["tokens"] {
			t.Errorf("token_ids %v: want %v of them", rec["token_ids"], rec["tokens"])
		}
		n++
	}
	if n != 15 {
		t.Errorf("%d generation lines", n)
	}
	if err := res.WriteMetrics(filepath.Join(dir, "m.json"), map[string]any{"x": 1}); err != nil {
		t.Fatal(err)
	}
	var m struct {
		Strengths []struct {
			Strength float64
			Metrics  map[string]struct{ Value, Lo, Hi *float64 }
		}
	}
	mb, _ := os.ReadFile(filepath.Join(dir, "m.json"))
	if err := json.Unmarshal(mb, &m); err != nil || len(m.Strengths) != 3 || m.Strengths[2].Metrics["vader_compound"].Value == nil {
		t.Errorf("metrics.json: %v\n%s", err, mb)
	}
	for ext, magic := range map[string]string{".png": "\x89PNG", ".svg": "<?xml"} {
		path := filepath.Join(dir, "plot"+ext)
		if err := res.PlotDoseResponse(path, "test"); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(path)
		if !bytes.HasPrefix(b, []byte(magic)) || len(b) < 1000 {
			t.Errorf("%s: %d bytes starting %q", ext, len(b), b[:min(8, len(b))])
		}
	}
	if err := res.PlotDoseResponse(filepath.Join(dir, "plot.pdf"), "x"); err == nil || !strings.Contains(err.Error(), "want .png or .svg") {
		t.Errorf("pdf: %v", err)
	}
}
