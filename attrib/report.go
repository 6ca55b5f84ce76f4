package attrib

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
)

// The recommended locus. Steering adds a vector to the residual stream at one layer and some
// token positions, so the locus is read off the resid_pre nodes' mean AtP scores s(l, c):
//
//  1. Layers: 1 … L−1. Layer 0's resid_pre is the token embeddings: patching it swaps input
//     tokens, which says where the prompts differ rather than where the model decides (and
//     patching all of it is the whole corruption, so it always scores the whole effect). A
//     one-layer model keeps layer 0.
//  2. The positions that matter: columns ranked by their mass w(c) = Σ_l |s(l, c)| over those
//     layers; the fewest top columns that hold 80% of the total mass, at most 8.
//  3. The layer: the one whose resid_pre nodes carry the largest Σ |s(l, c)| over those columns
//     (the earlier layer on a tie).
//  4. Its positions: those columns where that layer's |s| is at least a tenth of its largest
//     there, given as offsets from the prompt's end (0 = last token), so they carry over to
//     prompts of other lengths.
//
// The locus's score is the signed sum of s over its positions: the first-order change of the
// metric from patching them all.
const (
	locusMass      = 0.8
	locusMaxPos    = 8
	locusKeepRatio = 0.1
)

// LocusRule is the rule above in one line, as locus.json records it.
const LocusRule = "resid_pre, layers >= 1: the positions holding 80% of sum_l |AtP| (at most 8), the layer with the largest sum |AtP| over them, its positions with |AtP| >= 0.1 of its largest there"

// Locus recommends where to steer, by the rule above; LayerScores gives each layer's Σ|s| over the
// positions that matter (0 for layer 0 when it is excluded).
func (res *Result) Locus() (*Locus, error) {
	g := res.Mean[AtP][ResidPre]
	if g == nil {
		return nil, fmt.Errorf("attrib: the locus needs resid_pre scores")
	}
	at := func(l, c int) float64 { return math.Abs(g.At(Node{Kind: ResidPre, Layer: l, Head: -1, Pos: c})) }
	first := 1
	if g.Layers == 1 {
		first = 0
	}
	mass := make([]float64, g.Positions)
	total := 0.0
	for c := range mass {
		for l := first; l < g.Layers; l++ {
			mass[c] += at(l, c)
		}
		total += mass[c]
	}
	cols := make([]int, g.Positions)
	for i := range cols {
		cols[i] = i
	}
	sort.SliceStable(cols, func(i, j int) bool { return mass[cols[i]] > mass[cols[j]] })
	var top []int
	sum := 0.0
	for _, c := range cols {
		if len(top) == locusMaxPos || (len(top) > 0 && sum >= locusMass*total) {
			break
		}
		top = append(top, c)
		sum += mass[c]
	}
	loc := &Locus{Layer: first, Rule: LocusRule, LayerScores: make([]float64, g.Layers)}
	for l := first; l < g.Layers; l++ {
		for _, c := range top {
			loc.LayerScores[l] += at(l, c)
		}
		if loc.LayerScores[l] > loc.LayerScores[loc.Layer] {
			loc.Layer = l
		}
	}
	peak := 0.0
	for _, c := range top {
		peak = math.Max(peak, at(loc.Layer, c))
	}
	for _, c := range top {
		if at(loc.Layer, c) >= locusKeepRatio*peak {
			loc.FromEnd = append(loc.FromEnd, g.Positions-1-c)
			loc.Score += g.At(Node{Kind: ResidPre, Layer: loc.Layer, Head: -1, Pos: c})
		}
	}
	sort.Ints(loc.FromEnd)
	loc.Hook = ResidPre.Point(loc.Layer).Name()
	loc.Metric = res.MetricName()
	return loc, nil
}

// MetricName is the pairs' metric kind, "logit_diff" or "logprob", or "mixed".
func (res *Result) MetricName() string {
	name := res.Pairs[0].Input.Metric.Name()
	for _, pr := range res.Pairs {
		if pr.Input.Metric.Name() != name {
			return "mixed"
		}
	}
	return name
}

// Meta describes a run for the reports.
type Meta struct {
	Model       string `json:"model"`
	Pairs       string `json:"pairs"`
	PairsSHA256 string `json:"pairs_sha256"`
	Align       string `json:"align"`
	DType       string `json:"dtype"`
	Device      string `json:"device,omitempty"` // cpu or cuda
}

// floats is a grid axis in JSON: NaN (no value) as null, values rounded to float32.
type floats []float64

func (f floats) MarshalJSON() ([]byte, error) {
	var b strings.Builder
	b.WriteByte('[')
	for i, v := range f {
		if i > 0 {
			b.WriteByte(',')
		}
		if math.IsNaN(v) || math.IsInf(v, 0) {
			b.WriteString("null")
		} else {
			b.WriteString(strconv.FormatFloat(float64(float32(v)), 'g', -1, 32))
		}
	}
	b.WriteByte(']')
	return []byte(b.String()), nil
}

// gridJSON nests a grid's values by its axes: [layer][pos], [layer][head][pos] or [layer][head].
func gridJSON(g *Grid) any {
	layers := make([]any, g.Layers)
	for l := range layers {
		heads := make([]floats, g.Heads)
		for h := range heads {
			off := (l*g.Heads + h) * g.Positions
			heads[h] = floats(g.Data[off : off+g.Positions])
		}
		switch {
		case !g.Kind.perHead():
			layers[l] = heads[0]
		case !g.Kind.perPos():
			row := make(floats, g.Heads)
			for h := range row {
				row[h] = heads[h][0]
			}
			layers[l] = row
		default:
			layers[l] = heads
		}
	}
	return layers
}

func scoresJSON(s [numMethods]Scores) map[string]map[string]any {
	out := map[string]map[string]any{}
	for m := Method(0); m < numMethods; m++ {
		for k, g := range s[m] {
			if g == nil {
				continue
			}
			if out[m.String()] == nil {
				out[m.String()] = map[string]any{}
			}
			out[m.String()][Kind(k).String()] = gridJSON(g)
		}
	}
	return out
}

func jsonFloat(v float64) any {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return v
}

// WriteJSON writes scores.json: the run's description, the averaged scores of every method and
// node (grids nested [layer][pos], [layer][head][pos] or [layer][head]; null where not computed),
// each pair's metric values, tokens and scores, the verification and the locus.
func (res *Result) WriteJSON(path string, meta Meta, loc *Locus) error {
	type pairJSON struct {
		Line          int                       `json:"line"`
		ID            string                    `json:"id,omitempty"`
		Metric        MetricSpec                `json:"metric"`
		CleanMetric   any                       `json:"clean_metric"`
		CorruptMetric any                       `json:"corrupt_metric"`
		Shift         int                       `json:"shift"`
		Tokens        []int32                   `json:"tokens"`
		Labels        []string                  `json:"labels"`
		Scores        map[string]map[string]any `json:"scores"`
	}
	type agreeJSON struct {
		Method   string `json:"method"`
		Kind     string `json:"kind"`
		N        int    `json:"n"`
		Pearson  any    `json:"pearson"`
		Spearman any    `json:"spearman"`
	}
	type missJSON struct {
		Node     string `json:"node"`
		Kind     string `json:"kind"`
		Layer    int    `json:"layer"`
		Head     int    `json:"head"`
		FromEnd  int    `json:"from_end"`
		Exact    any    `json:"exact"`
		AtP      any    `json:"atp"`
		AtPStar  any    `json:"atp_star,omitempty"`
		GradDrop any    `json:"graddrop,omitempty"`
	}
	type verifyJSON struct {
		Sample  string      `json:"sample,omitempty"`
		Nodes   int         `json:"nodes"`
		Skipped string      `json:"skipped,omitempty"`
		Stats   []agreeJSON `json:"agreement"`
		Worst   []missJSON  `json:"worst_misses"`
	}
	doc := struct {
		Meta
		Metric        string                    `json:"metric"`
		Star          bool                      `json:"atp_star"`
		Layers        int                       `json:"layers"`
		Heads         int                       `json:"heads"`
		KVHeads       int                       `json:"kv_heads"`
		NPairs        int                       `json:"n_pairs"`
		Width         int                       `json:"positions"`
		Labels        []string                  `json:"labels"`
		CleanMetric   float64                   `json:"clean_metric"`
		CorruptMetric float64                   `json:"corrupt_metric"`
		Nodes         []string                  `json:"node_kinds"`
		Mean          map[string]map[string]any `json:"mean"`
		Verify        *verifyJSON               `json:"verify,omitempty"`
		Locus         *Locus                    `json:"locus,omitempty"`
		Timing        map[string]float64        `json:"timing_s"`
		PerPair       []pairJSON                `json:"per_pair"`
	}{Meta: meta, Metric: res.MetricName(), Star: res.Star, Layers: res.Layers, Heads: res.Heads, KVHeads: res.KVHeads,
		NPairs: len(res.Pairs), Width: res.Width, Labels: res.Labels, CleanMetric: res.Clean, CorruptMetric: res.Corrupt,
		Mean: scoresJSON(res.Mean), Locus: loc}
	for _, k := range res.Kinds {
		doc.Nodes = append(doc.Nodes, k.String())
	}
	t := res.Timing
	doc.Timing = map[string]float64{"forward": t.Forward.Seconds(),
		"backward": t.Backward.Seconds(), "scores": t.Score.Seconds(), "atp": t.AtP().Seconds(), "atp_star_extra": t.Star.Seconds(),
		"exact": t.Exact.Seconds(), "patched_runs": float64(t.Patched)}
	if v := res.Verified; v != nil {
		vj := &verifyJSON{Sample: v.Sample, Nodes: v.Nodes, Skipped: v.Skipped, Stats: []agreeJSON{}, Worst: []missJSON{}}
		for _, a := range v.Stats {
			vj.Stats = append(vj.Stats, agreeJSON{a.Method.String(), a.Kind, a.N, jsonFloat(a.Pearson), jsonFloat(a.Spearman)})
		}
		for _, m := range v.Worst {
			mj := missJSON{Node: res.NodeName(m.Node), Kind: m.Node.Kind.String(), Layer: m.Node.Layer, Head: m.Node.Head, FromEnd: res.fromEnd(m.Node),
				Exact: jsonFloat(m.Exact), AtP: jsonFloat(m.AtP), AtPStar: jsonFloat(m.AtPStar), GradDrop: jsonFloat(m.GradDrop)}
			vj.Worst = append(vj.Worst, mj)
		}
		doc.Verify = vj
	}
	for _, pr := range res.Pairs {
		in := pr.Input
		doc.PerPair = append(doc.PerPair, pairJSON{Line: in.Line, ID: in.ID, Metric: in.Metric, CleanMetric: jsonFloat(pr.Clean),
			CorruptMetric: jsonFloat(pr.Corrupt), Shift: in.Shift, Tokens: in.Clean, Labels: in.Labels, Scores: scoresJSON(pr.Scores)})
	}
	b, err := json.MarshalIndent(doc, "", " ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// fromEnd is a mean-grid node's offset from the prompts' end (−1 for nodes without a position).
func (res *Result) fromEnd(n Node) int {
	if !n.Kind.perPos() {
		return -1
	}
	return res.Width - 1 - n.Pos
}

// NodeName names a node of the averaged grids with its hook, head, offset from the end and token.
func (res *Result) NodeName(n Node) string {
	s := n.Kind.Point(n.Layer).Name()
	if n.Kind.perHead() {
		unit := "head"
		if n.Kind == Key {
			unit = "kv head"
		}
		s += fmt.Sprintf(" %s %d", unit, n.Head)
	}
	if n.Kind.perPos() {
		s += fmt.Sprintf(" @−%d", res.fromEnd(n))
		if l := res.Labels[n.Pos]; l != fmt.Sprintf("−%d", res.fromEnd(n)) {
			s += fmt.Sprintf(` "%s"`, l)
		}
	} else {
		s += " (all positions)"
	}
	return s
}

// WriteCSV writes scores.csv: one row per node of the averaged grids, with every method's score
// (empty where not computed). Per-pair scores are in scores.json.
func (res *Result) WriteCSV(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	w.Write([]string{"kind", "hook", "layer", "head", "pos", "from_end", "token", "atp", "atp_star", "graddrop", "exact"})
	for _, k := range res.Kinds {
		g := res.Mean[AtP][k]
		for i := range g.Data {
			n := g.Node(i)
			row := []string{k.String(), k.Point(n.Layer).Name(), strconv.Itoa(n.Layer), "", "", "", ""}
			if n.Head >= 0 {
				row[3] = strconv.Itoa(n.Head)
			}
			if n.Pos >= 0 {
				row[4], row[5], row[6] = strconv.Itoa(n.Pos), strconv.Itoa(res.fromEnd(n)), res.Labels[n.Pos]
			}
			for _, m := range []Method{AtP, AtPStar, GradDrop, Exact} {
				cell := ""
				if mg := res.Mean[m][k]; mg != nil && !math.IsNaN(mg.Data[i]) {
					cell = strconv.FormatFloat(mg.Data[i], 'g', 7, 64)
				}
				row = append(row, cell)
			}
			w.Write(row)
		}
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Summary writes the short text report: metric values, the top nodes by |AtP|, the recommended
// locus and the agreement with exact patching.
func (res *Result) Summary(w io.Writer, loc *Locus, top int) {
	fmt.Fprintf(w, "pairs: %d, metric %s: clean %.4g, corrupt %.4g (Δ %+.4g), averaged over pairs\n", len(res.Pairs), res.MetricName(), res.Clean, res.Corrupt, res.Corrupt-res.Clean)
	type scored struct {
		n Node
		v float64
	}
	var all []scored
	for _, k := range res.Kinds {
		g := res.Mean[AtP][k]
		for i, v := range g.Data {
			all = append(all, scored{g.Node(i), v})
		}
	}
	sort.SliceStable(all, func(i, j int) bool { return math.Abs(all[i].v) > math.Abs(all[j].v) })
	delta := res.Corrupt - res.Clean
	fmt.Fprintf(w, "top nodes by |AtP| (first-order change of the metric when the node is patched from corrupt):\n")
	for i, s := range all[:min(top, len(all))] {
		frac := ""
		if delta != 0 {
			frac = fmt.Sprintf("  (%.0f%% of Δ)", 100*s.v/delta)
		}
		extra := ""
		if g := res.Mean[AtPStar][s.n.Kind]; g != nil && (s.n.Kind == Query || s.n.Kind == Key) {
			extra += fmt.Sprintf("  AtP* %+.4g", res.Mean[AtPStar][s.n.Kind].At(s.n))
		}
		if g := res.Mean[Exact][s.n.Kind]; g != nil && !math.IsNaN(g.At(s.n)) {
			extra += fmt.Sprintf("  exact %+.4g", g.At(s.n))
		}
		fmt.Fprintf(w, "  %2d. %-58s %+.4g%s%s\n", i+1, res.NodeName(s.n), s.v, frac, extra)
	}
	if loc != nil {
		var at []string
		for _, e := range loc.FromEnd {
			if l := res.Labels[res.Width-1-e]; l != fmt.Sprintf("−%d", e) {
				at = append(at, fmt.Sprintf(`−%d "%s"`, e, l))
			} else {
				at = append(at, fmt.Sprintf("−%d", e))
			}
		}
		fmt.Fprintf(w, "recommended locus: %s at positions from the end %v (%s); score %+.4g\n", loc.Hook, loc.FromEnd, strings.Join(at, ", "), loc.Score)
		var per []string
		for l, v := range loc.LayerScores {
			per = append(per, fmt.Sprintf("%d:%.3g", l, v))
		}
		fmt.Fprintf(w, "  Σ|AtP| of resid_pre at the positions that matter, by layer: %s\n", strings.Join(per, " "))
	}
	if v := res.Verified; v != nil {
		if v.Skipped != "" {
			fmt.Fprintf(w, "exact patching: skipped: %s\n", v.Skipped)
			return
		}
		fmt.Fprintf(w, "exact patching (%s):\n", v.Sample)
		for _, a := range v.Stats {
			fmt.Fprintf(w, "  %-8s %-9s n=%-6d Pearson %6.3f  Spearman %6.3f\n", a.Method, a.Kind, a.N, a.Pearson, a.Spearman)
		}
		fmt.Fprintf(w, "  worst AtP misses:\n")
		for _, m := range v.Worst {
			extra := ""
			if !math.IsNaN(m.AtPStar) {
				extra = fmt.Sprintf("  AtP* %+.4g  GradDrop %.4g", m.AtPStar, m.GradDrop)
			}
			fmt.Fprintf(w, "    %-58s exact %+.4g  AtP %+.4g%s\n", res.NodeName(m.Node), m.Exact, m.AtP, extra)
		}
	}
}
