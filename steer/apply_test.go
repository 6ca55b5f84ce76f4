package steer

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/tillerlm/tiller/llama/chat"

	"github.com/tillerlm/tiller/hooks"
	"github.com/tillerlm/tiller/llama"
)

// randomVector is a unit vector at the given layers of hook_resid_post, with a recorded norm.
func randomVector(d int, seed uint64, layers ...int) *Vector {
	rng := rand.New(rand.NewPCG(seed, 9))
	v := &Vector{Hook: "hook_resid_post"}
	for _, l := range layers {
		vals := make([]float32, d)
		var n float64
		for i := range vals {
			vals[i] = float32(rng.NormFloat64())
			n += float64(vals[i]) * float64(vals[i])
		}
		for i := range vals {
			vals[i] /= float32(math.Sqrt(n))
		}
		v.Layers = append(v.Layers, Layer{Index: l, Values: vals, MeanNorm: 3 + float64(l), TrainAcc: math.NaN(), HeldAcc: math.NaN()})
	}
	return v
}

func encodeAll(t *testing.T, tm *tiny, prompts ...string) [][]int32 {
	t.Helper()
	var out [][]int32
	for _, p := range prompts {
		ids, err := tm.tok.EncodeChat([]chat.Message{{Role: "user", Content: p}}, true)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ids)
	}
	return out
}

// Greedy output at strength 0 is unsteered generation: in a sweep, the strength-0 copy of each
// prompt generates what Runner.Generate gives with no hooks, while the steered copies differ; and
// the logits of a strength-0 row are bit for bit those of the same batch run without hooks.
func TestStrengthZeroIsUnsteered(t *testing.T) {
	tm := loadTiny(t, tinyDir(t, 0.3, nil))
	c := tm.m.Config
	prompts := encodeAll(t, tm, "How are you?", "Tell me about your day, please.", "ok")
	plan := &Plan{Vectors: []Applied{{Name: "v", Vector: randomVector(c.Dim, 1, 0, 1, 2), Strength: 1}}, Positions: "all", Relative: true}
	gen, _, err := Generate(tm.r, plan, prompts, []float64{0, 2, 4}, GenOptions{MaxTokens: 16, Stop: []int32{}})
	if err != nil {
		t.Fatal(err)
	}
	changed := 0
	for i, ids := range prompts {
		var want []int32
		if _, err := tm.r.Generate(ids, llama.GenerateOptions{MaxTokens: 16, Stop: []int32{}}, func(id int32) bool { want = append(want, id); return true }); err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(gen[i][0].Tokens) != fmt.Sprint(want) {
			t.Errorf("prompt %d at strength 0: %v, unsteered %v", i, gen[i][0].Tokens, want)
		}
		if fmt.Sprint(gen[i][2].Tokens) != fmt.Sprint(want) {
			changed++
		}
	}
	if changed == 0 {
		t.Error("strength 4 × the residual norm changed no generation")
	}

	// Bit for bit: one batch of two sequences, the first at strength 0.
	batch := llama.Prompt(0, prompts[1], 0, true)
	second := llama.Prompt(1, prompts[1], 0, true)
	batch.Tokens, batch.Seq, batch.Pos, batch.Logits = append(batch.Tokens, second.Tokens...), append(batch.Seq, second.Seq...), append(batch.Pos, second.Pos...), append(batch.Logits, second.Logits...)
	pre, _, err := plan.Hooks(c, []int{len(prompts[1]), len(prompts[1])}, []float64{0, 3})
	if err != nil {
		t.Fatal(err)
	}
	run := func(h *hooks.Set) []float32 {
		out, err := tm.r.Forward(batch, tm.r.NewKVCache(2*len(prompts[1])+32, 16), h)
		if err != nil {
			t.Fatal(err)
		}
		return append([]float32(nil), out.F32()...)
	}
	steered, plain := run(pre), run(nil)
	n := len(prompts[1]) * c.Vocab
	for i := 0; i < n; i++ {
		if math.Float32bits(steered[i]) != math.Float32bits(plain[i]) {
			t.Fatalf("strength-0 row logit %d: %g steered batch, %g unhooked", i, steered[i], plain[i])
		}
	}
	if steered[n] == plain[n] && steered[2*n-1] == plain[2*n-1] {
		t.Error("the strength-3 sequence was not steered")
	}
	// Strength 0 everywhere is no hook set at all: the fast path.
	if p, d, err := plan.Hooks(c, []int{4, 5}, []float64{0, 0}); p != nil || d != nil || err != nil {
		t.Errorf("all-zero strengths: %v %v %v", p, d, err)
	}
}

// A sweep in one batch generates, for every strength, what a run at that strength alone generates:
// per-sequence strengths reach the right rows, greedy and sampled (seeds per prompt).
func TestSweepMatchesSeparateRuns(t *testing.T) {
	tm := loadTiny(t, tinyDir(t, 0.3, nil))
	c := tm.m.Config
	prompts := encodeAll(t, tm, "How are you?", "What's new?")
	plan := &Plan{Vectors: []Applied{{Name: "a", Vector: randomVector(c.Dim, 2, 1), Strength: 0.5}, {Name: "b", Vector: randomVector(c.Dim, 3, 2), Strength: -0.25}}, Positions: "all", Relative: true}
	sweep := []float64{0, 2, 4, 8}
	for _, sc := range []llama.SamplerConfig{{}, {Temperature: 0.8, TopK: 40, Seed: 17}} {
		opts := GenOptions{MaxTokens: 10, Sampler: sc, Stop: []int32{}}
		all, st, err := Generate(tm.r, plan, prompts, sweep, opts)
		if err != nil {
			t.Fatal(err)
		}
		if st.Sequences != len(prompts)*len(sweep) || st.DecodeSteps != 9 {
			t.Errorf("one batch of %d sequences in 9 steps expected: %+v", len(prompts)*len(sweep), st)
		}
		distinct := map[string]bool{}
		for k, s := range sweep {
			alone, _, err := Generate(tm.r, plan, prompts, []float64{s}, opts)
			if err != nil {
				t.Fatal(err)
			}
			for i := range prompts {
				if fmt.Sprint(all[i][k].Tokens) != fmt.Sprint(alone[i][0].Tokens) {
					t.Errorf("temperature %g, prompt %d, strength %g: swept %v, alone %v", sc.Temperature, i, s, all[i][k].Tokens, alone[i][0].Tokens)
				}
				distinct[fmt.Sprint(all[i][k].Tokens)] = true
			}
		}
		if len(distinct) < 3 {
			t.Errorf("temperature %g: only %d distinct generations over the sweep", sc.Temperature, len(distinct))
		}
	}
}

// Each position mode adds alpha·v exactly at its positions: read back after the addition, the
// steered activation minus the unsteered one is alpha·v there and zero elsewhere.
func TestPositions(t *testing.T) {
	tm := loadTiny(t, tinyDir(t, 0.3, nil))
	c := tm.m.Config
	v := randomVector(c.Dim, 4, 1)
	lens := []int{7, 5} // two prompts of different lengths in one prefill
	var b llama.Batch
	for s, n := range lens {
		ids := make([]int32, n)
		for i := range ids {
			ids[i] = int32(40 + 3*i + s)
		}
		p := llama.Prompt(int32(s), ids, 0, false)
		b.Tokens, b.Seq, b.Pos = append(b.Tokens, p.Tokens...), append(b.Seq, p.Seq...), append(b.Pos, p.Pos...)
	}
	b.Logits = make([]bool, len(b.Tokens))
	read := func(h *hooks.Set) *hooks.Cache {
		if h == nil {
			h = hooks.NewSet(c.HookDims())
		}
		if err := h.Read("blocks.1.hook_resid_post"); err != nil { // registered after the addition, so it reads the steered value
			t.Fatal(err)
		}
		if _, err := tm.r.Forward(b, tm.r.NewKVCache(64, 16), h); err != nil {
			t.Fatal(err)
		}
		return h.Cache
	}
	plain := read(nil)
	scales := []float64{2, 3}
	for _, tc := range []struct {
		positions string
		fromEnd   []int
		want      func(seq, pos int) bool // steered at prefill
		decode    bool
	}{
		{"all", nil, func(int, int) bool { return true }, true},
		{"prompt", nil, func(int, int) bool { return true }, false},
		{"generated", nil, func(s, p int) bool { return p == lens[s]-1 }, true},
		{"locus", []int{0, 2, 6}, func(s, p int) bool { return p == lens[s]-1 || p == lens[s]-3 || p == lens[s]-7 }, false},
	} {
		plan := &Plan{Vectors: []Applied{{Name: "v", Vector: v, Strength: 1.5}}, Positions: tc.positions, FromEnd: tc.fromEnd, Relative: true}
		pre, dec, err := plan.Hooks(c, lens, scales)
		if err != nil {
			t.Fatal(err)
		}
		if (dec != nil) != tc.decode {
			t.Errorf("%s: decode set %v, want one: %v", tc.positions, dec != nil, tc.decode)
		}
		got := read(pre)
		for s, n := range lens {
			a, _ := got.Get(int32(s), "blocks.1.hook_resid_post")
			p0, _ := plain.Get(int32(s), "blocks.1.hook_resid_post")
			alpha := 1.5 * v.Layers[0].MeanNorm * scales[s]
			for pos := 0; pos < n; pos++ {
				want := 0.0
				if tc.want(s, pos) {
					want = alpha
				}
				// The difference's projection on v (unit) is the strength; nothing else changes
				// at this point (the addition is the last thing at layer 1's output).
				var proj, rest float64
				for j := 0; j < c.Dim; j++ {
					d := float64(a.F32()[pos*c.Dim+j] - p0.F32()[pos*c.Dim+j])
					proj += d * float64(v.Layers[0].Values[j])
					rest += d * d
				}
				rest -= proj * proj
				if math.Abs(proj-want) > 1e-4*(1+alpha) || rest > 1e-6*(1+alpha*alpha) {
					t.Errorf("%s: sequence %d position %d moved %g along v (want %g) and %g across", tc.positions, s, pos, proj, want, math.Sqrt(max(rest, 0)))
				}
			}
		}
	}
}

func TestPlanErrors(t *testing.T) {
	tm := loadTiny(t, tinyDir(t, 0.3, nil))
	c := tm.m.Config
	multi := randomVector(c.Dim, 5, 0, 1)
	noNorm := randomVector(c.Dim, 6, 1)
	noNorm.Layers[0].MeanNorm = 0
	short := randomVector(c.Dim-1, 7, 1)
	cases := []struct {
		plan Plan
		want string
	}{
		{Plan{Vectors: []Applied{{Name: "m", Vector: multi, Strength: 1}}, Layers: []int{2}, Positions: "all"}, "m has no direction for layer 2 (it has layers [0 1])"},
		{Plan{Vectors: []Applied{{Name: "m", Vector: multi, Strength: 1}}, Layers: []int{3}, Positions: "all"}, "layer 3 is out of range"},
		{Plan{Vectors: []Applied{{Name: "n", Vector: noNorm, Strength: 1}}, Positions: "all", Relative: true}, "n records no residual norm for layer 1"},
		{Plan{Vectors: []Applied{{Name: "s", Vector: short, Strength: 1}}, Positions: "all"}, "hidden_size is 48"},
		{Plan{Vectors: []Applied{{Name: "m", Vector: multi, Strength: math.NaN()}}, Positions: "all"}, "not a finite number"},
		{Plan{Vectors: []Applied{{Name: "m", Vector: multi, Strength: 1}}, Positions: "middle"}, `positions "middle"`},
		{Plan{Vectors: []Applied{{Name: "m", Vector: multi, Strength: 1}}, Positions: "locus"}, "needs the positions of a locus.json"},
	}
	for _, tc := range cases {
		if _, _, err := tc.plan.Hooks(c, []int{3}, []float64{1}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want %q", err, tc.want)
		}
	}
	// A one-layer vector is applied at every layer asked for.
	one := randomVector(c.Dim, 8, 1)
	pre, dec, err := (&Plan{Vectors: []Applied{{Name: "one", Vector: one, Strength: 1}}, Layers: []int{0, 2}, Positions: "all"}).Hooks(c, []int{3}, []float64{1})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []int{0, 2} {
		p := hooks.Point{Layer: l, Kind: hooks.ResidPost}
		if !pre.Active(p) || !dec.Active(p) {
			t.Errorf("layer %d not steered", l)
		}
	}
	if pre.Active(hooks.Point{Layer: 1, Kind: hooks.ResidPost}) {
		t.Error("layer 1 steered though not asked for")
	}
}
