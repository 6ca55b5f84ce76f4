package attrib

import (
	"encoding/csv"
	"encoding/json"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// syntheticResult is a Result with one pair and a hand-made resid_pre grid of 4 layers × 10
// positions: values v[layer][pos].
func syntheticResult(v [4][10]float64) *Result {
	g := NewGrid(ResidPre, 4, 1, 10)
	for l := range v {
		for p, x := range v[l] {
			g.Set(Node{Kind: ResidPre, Layer: l, Head: -1, Pos: p}, x)
		}
	}
	in := &Input{Metric: MetricSpec{LogProb: " x"}, Clean: make([]int32, 10)}
	res := &Result{Kinds: []Kind{ResidPre}, Layers: 4, Heads: 1, KVHeads: 1, Width: 10, Pairs: []*PairResult{{Input: in}}}
	for p := 0; p < 10; p++ {
		res.Labels = append(res.Labels, string(rune('a'+p)))
	}
	res.Mean[AtP][ResidPre] = g
	res.Pairs[0].Scores[AtP][ResidPre] = g
	return res
}

// The locus rule (see report.go): layer 0 is left out; the positions holding 80% of the mass;
// the layer with the most mass there; its positions above a tenth of its peak, from the end.
func TestLocusRule(t *testing.T) {
	var v [4][10]float64
	v[0][2] = 100 // the embeddings of the corrupted token: ignored
	v[1][2] = 1.0
	v[1][8] = 0.5
	v[2][8] = 2.0
	v[2][9] = -3.0
	v[2][2] = 0.2
	v[3][9] = 1.5
	v[3][5] = 0.01
	res := syntheticResult(v)
	loc, err := res.Locus()
	if err != nil {
		t.Fatal(err)
	}
	// Mass by column over layers 1–3: col 9: 4.5, col 8: 2.5, col 2: 1.2, col 5: 0.01 (total 8.21).
	// 80% needs cols 9 and 8 (7.0 of 8.21 = 85%). Layer 2 has 5.0 there, layer 3 1.5, layer 1 0.5.
	if loc.Hook != "blocks.2.hook_resid_pre" || loc.Layer != 2 {
		t.Errorf("locus %s layer %d, want blocks.2.hook_resid_pre", loc.Hook, loc.Layer)
	}
	if len(loc.FromEnd) != 2 || loc.FromEnd[0] != 0 || loc.FromEnd[1] != 1 {
		t.Errorf("positions from the end %v, want [0 1]", loc.FromEnd)
	}
	if loc.Score != -1 || loc.Metric != "logprob" || loc.LayerScores[0] != 0 || loc.LayerScores[2] != 5 {
		t.Errorf("score %g, metric %q, layer scores %v", loc.Score, loc.Metric, loc.LayerScores)
	}
	// A position under a tenth of the layer's peak there is dropped: make col 8 tiny at layer 2
	// but large elsewhere so that it stays among the positions that matter.
	v[2][8] = 0.1
	v[3][8] = 4
	loc, _ = syntheticResult(v).Locus()
	if loc.Layer != 3 || len(loc.FromEnd) != 2 {
		t.Errorf("layer %d positions %v, want layer 3 with both", loc.Layer, loc.FromEnd)
	}
	v[3][8] = 0.12
	v[2][9] = -30
	loc, _ = syntheticResult(v).Locus()
	if loc.Layer != 2 || len(loc.FromEnd) != 1 || loc.FromEnd[0] != 0 {
		t.Errorf("layer %d positions %v, want layer 2 with the last token only", loc.Layer, loc.FromEnd)
	}
	// Spread mass: at most 8 positions.
	for p := 0; p < 10; p++ {
		v[1][p], v[2][p], v[3][p] = 1, 1, 1
	}
	loc, _ = syntheticResult(v).Locus()
	if len(loc.FromEnd) != 8 || loc.Layer != 1 {
		t.Errorf("flat grid: layer %d, %d positions; want the first layer of the tie and 8", loc.Layer, len(loc.FromEnd))
	}
}

// The report files: scores.json parses, NaN (not verified) becomes null, every node of every
// kind is a row of scores.csv, and the heatmaps are a PNG with the expected size and an SVG with
// the token labels.
func TestReportFiles(t *testing.T) {
	m := tinyModel(t, 9, nil)
	r := f64Runner(t, m)
	ins := threePairs(wholeSwaps())
	for i, in := range ins {
		for q := range in.Labels {
			in.Labels[q] = string(rune('A'+i)) + string(rune('a'+q))
		}
	}
	res, err := Run(r, ins, Options{Verify: 6, Star: true})
	if err != nil {
		t.Fatal(err)
	}
	loc, err := res.Locus()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := res.WriteJSON(filepath.Join(dir, "scores.json"), Meta{Model: "m", Pairs: "p.jsonl"}, loc); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "scores.json"))
	var doc struct {
		NPairs int                                   `json:"n_pairs"`
		Labels []string                              `json:"labels"`
		Mean   map[string]map[string]json.RawMessage `json:"mean"`
		Verify struct {
			Nodes int `json:"nodes"`
			Stats []struct {
				Method string `json:"method"`
			} `json:"agreement"`
			Worst []map[string]any `json:"worst_misses"`
		} `json:"verify"`
		Locus   *Locus           `json:"locus"`
		PerPair []map[string]any `json:"per_pair"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.NPairs != 3 || len(doc.PerPair) != 3 || doc.Verify.Nodes != 6 || doc.Locus == nil || doc.Locus.Hook != loc.Hook {
		t.Errorf("scores.json: %d pairs, %d per pair, verify %d nodes, locus %+v", doc.NPairs, len(doc.PerPair), doc.Verify.Nodes, doc.Locus)
	}
	// The mean labels: columns before the shortest prompt's start come from fewer pairs and
	// differ, so they read as offsets; the last column is "−0" as the pairs' last tokens differ.
	if len(doc.Labels) != 11 || doc.Labels[10] != "−0" {
		t.Errorf("labels %q", doc.Labels)
	}
	var resid [][]*float64
	if err := json.Unmarshal(doc.Mean["exact"]["resid_pre"], &resid); err != nil {
		t.Fatal(err)
	}
	nulls := 0
	for _, row := range resid {
		for _, v := range row {
			if v == nil {
				nulls++
			}
		}
	}
	if nulls == 0 || len(resid) != res.Layers || len(resid[0]) != res.Width {
		t.Errorf("exact resid_pre grid %d×%d with %d nulls; want %d×%d with the unverified nodes null", len(resid), len(resid[0]), nulls, res.Layers, res.Width)
	}
	for _, k := range []string{"atp", "atp_star", "graddrop", "exact"} {
		if _, ok := doc.Mean[k]["head_pos"]; !ok {
			t.Errorf("scores.json has no mean %s head_pos grid", k)
		}
	}

	if err := res.WriteCSV(filepath.Join(dir, "scores.csv")); err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(filepath.Join(dir, "scores.csv"))
	rows, err := csv.NewReader(f).ReadAll()
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	want := 1
	for _, k := range res.Kinds {
		want += len(res.Mean[AtP][k].Data)
	}
	if len(rows) != want || strings.Join(rows[0], ",") != "kind,hook,layer,head,pos,from_end,token,atp,atp_star,graddrop,exact" {
		t.Errorf("scores.csv: %d rows, want %d; header %v", len(rows), want, rows[0])
	}
	verified := 0
	for _, row := range rows[1:] {
		if row[10] != "" {
			verified++
		}
		if row[7] == "" || row[9] == "" {
			t.Fatalf("row %v lacks atp or graddrop", row)
		}
	}
	if verified != 6 {
		t.Errorf("%d rows have an exact effect, want the 6 verified nodes", verified)
	}

	for _, k := range []Kind{ResidPre, AttnOut, MLPOut, Head} {
		pngPath := filepath.Join(dir, "heatmap_"+k.String()+".png")
		if err := res.Heatmap(AtP, k, pngPath); err != nil {
			t.Fatal(err)
		}
		f, _ := os.Open(pngPath)
		cfg, err := png.DecodeConfig(f)
		f.Close()
		if err != nil || cfg.Width < 500 || cfg.Height < 300 {
			t.Errorf("%s: %v, %dx%d", pngPath, err, cfg.Width, cfg.Height)
		}
		svgPath := filepath.Join(dir, "heatmap_"+k.String()+".svg")
		if err := res.Heatmap(AtP, k, svgPath); err != nil {
			t.Fatal(err)
		}
		svg, _ := os.ReadFile(svgPath)
		if !strings.Contains(string(svg), "<svg") || !strings.Contains(string(svg), "layer") {
			t.Errorf("%s is not an SVG with a layer axis", svgPath)
		}
		if k != Head && !strings.Contains(string(svg), "−0") {
			t.Errorf("%s lacks the position labels", svgPath)
		}
	}
	if err := res.Heatmap(AtP, HeadPos, filepath.Join(dir, "x.png")); err == nil {
		t.Error("a per-position head grid has no layer-by-column heatmap")
	}
	if err := res.Heatmap(AtP, ResidPre, filepath.Join(dir, "x.pdf")); err == nil {
		t.Error("a .pdf heatmap was accepted")
	}

	// The summary names the locus and the agreement.
	var sb strings.Builder
	res.Summary(&sb, loc, 5)
	for _, w := range []string{"top nodes", "recommended locus: " + loc.Hook, "exact patching (6 nodes", "Pearson", "worst AtP misses"} {
		if !strings.Contains(sb.String(), w) {
			t.Errorf("summary lacks %q:\n%s", w, sb.String())
		}
	}
	if math.IsNaN(res.Clean) {
		t.Error("mean clean metric is NaN")
	}
}
