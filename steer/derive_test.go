package steer

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/llama/chat"
	"github.com/tillerlm/tiller/tensor/tensortest"

	"github.com/tillerlm/tiller/llama/tokenizer"
)

// The planted direction: token 'A' has embedding c·u for a known unit vector u and token 'B' the
// zero vector, so pairs that differ only in A against B differ at layer 0 by c·u at that position.
// The derived vector recovers u: exactly (to rounding) at blocks.0.hook_resid_pre, the embedding
// itself; at blocks.0.hook_resid_post the block's own attention and MLP add a little on top, and
// the cosine must still be >= 0.99. Both methods, with the token last (positions last) and
// anywhere in the text (positions all, where the other positions differ only through attention).
func TestPlantedDirection(t *testing.T) {
	const c = 12 // |planted| against attention and MLP outputs of norm ~0.1 at initializer_range 0.02
	rng := rand.New(rand.NewPCG(1, 2))
	u := make([]float64, 48)
	var norm float64
	for i := range u {
		u[i] = rng.NormFloat64()
		norm += u[i] * u[i]
	}
	for i := range u {
		u[i] /= math.Sqrt(norm)
	}
	dir := tinyDir(t, 0.02, func(embed func(int) []float32) {
		a := embed('A')
		for i := range a {
			a[i] = float32(c * u[i])
		}
		embed('B') // zeros
	})
	tm := loadTiny(t, dir)
	contexts := []string{"the cat sat", "x", "hello there, friend", "0123456789", "a longer context of several words", "qqq", "zz top", "mid"}
	end := func(ctx, tok string) string { return ctx + " " + tok }
	middle := func(ctx, tok string) string { return ctx[:len(ctx)/2] + tok + ctx[len(ctx)/2:] }
	pairs := func(place func(ctx, tok string) string) []Pair {
		var ps []Pair
		for _, ctx := range contexts {
			ps = append(ps, Pair{Positive: tokenizer.Text{Raw: place(ctx, "A")}, Negative: tokenizer.Text{Raw: place(ctx, "B")}})
		}
		return ps
	}
	for _, tc := range []struct {
		hook, positions string
		place           func(ctx, tok string) string
		min             float64
	}{
		{"hook_resid_pre", "last", end, 0.999999},
		{"hook_resid_pre", "all", middle, 0.999999},
		{"hook_resid_post", "last", end, 0.99},
		{"hook_resid_post", "all", middle, 0.99},
	} {
		for _, method := range Methods {
			name := fmt.Sprintf("%s/%s/%s", tc.hook, tc.positions, method)
			v, err := Derive(tm.r, tm.tok, pairs(tc.place), DeriveOptions{Hook: tc.hook, Layers: []int{0}, Positions: tc.positions, Method: method, HoldOut: 0.25})
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			l := v.Layers[0]
			t.Logf("%s: cos %.7f", name, cosine(l.Values, u))
			if cos := cosine(l.Values, u); cos < tc.min {
				t.Errorf("%s: cosine with the planted direction %.6f, want >= %g", name, cos, tc.min)
			}
			if n := norm32(l.Values); math.Abs(n-1) > 1e-6 {
				t.Errorf("%s: |v| = %g, want 1", name, n)
			}
			if l.TrainAcc != 1 || l.HeldAcc != 1 || l.Gap <= 0 || v.Info.TrainPairs != 6 || v.Info.HeldPairs != 2 {
				t.Errorf("%s: gap %g, train %g, held %g over %d/%d pairs", name, l.Gap, l.TrainAcc, l.HeldAcc, v.Info.TrainPairs, v.Info.HeldPairs)
			}
			if l.MeanNorm <= 0 {
				t.Errorf("%s: mean norm %g", name, l.MeanNorm)
			}
		}
	}
}

func norm32(v []float32) float64 {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	return math.Sqrt(s)
}

// Mean difference and PCA on hand-made differences: the mean is the mean; the principal component
// of differences that all lie along one axis with noise across it is that axis; signs point from
// negative to positive, whichever way the data lie.
func TestDirectionMath(t *testing.T) {
	D := [][]float64{{2, 0.1, 0}, {3, -0.1, 0}, {1, 0, 0.1}, {2, 0, -0.1}}
	m := direction(D, "mean")
	want := []float64{2, 0, 0}
	if cos := cosine(f32(m), want); cos < 1-1e-12 {
		t.Errorf("mean direction %v", m)
	}
	p := direction(D, "pca")
	if cos := cosine(f32(p), want); cos < 0.999 {
		t.Errorf("pca direction %v", p)
	}
	// Flipped data: both still point so that the differences project positive.
	for i := range D {
		for j := range D[i] {
			D[i][j] = -D[i][j]
		}
	}
	for _, method := range Methods {
		v := direction(D, method)
		if gap, acc := separation(D, v); gap <= 0 || acc != 1 {
			t.Errorf("%s on flipped data: gap %g, accuracy %g", method, gap, acc)
		}
	}
	// PCA picks the axis of largest spread about the origin, unlike the mean, when the differences
	// disagree in sign along it: mean ≈ (0, 1), PCA ≈ (1, 0) with positive mean projection.
	D = [][]float64{{5, 1}, {-5, 1}, {5.2, 1}, {-4.8, 1}}
	if v := direction(D, "pca"); math.Abs(v[0]) < 0.99 || dot(D[0], v)+dot(D[1], v)+dot(D[2], v)+dot(D[3], v) < 0 {
		t.Errorf("pca %v", v)
	}
	if v := direction(D, "mean"); math.Abs(v[1]) < 0.99 {
		t.Errorf("mean %v", v)
	}
}

func f32(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out
}

// mean-response reduces only the assistant's reply: replies that differ while the user turns
// differ too give a direction computed from the replies alone, so swapping the user turns between
// positive and negative changes nothing.
func TestMeanResponseSpan(t *testing.T) {
	tm := loadTiny(t, tinyDir(t, 0.3, nil))
	msgs := []chat.Message{{Role: "user", Content: "hi"}, {Role: "assistant", Content: "hello you"}}
	s, err := encodeSpan(tm.tok, tokenizer.Text{Messages: msgs}, "mean-response")
	if err != nil {
		t.Fatal(err)
	}
	if got := tm.tok.Decode(s.ids[s.lo:s.hi], false); got != "hello you" {
		t.Errorf("response span decodes to %q", got)
	}
	if s, _ := encodeSpan(tm.tok, tokenizer.Text{Messages: msgs}, "last"); s.hi-s.lo != 1 || s.hi != len(s.ids) {
		t.Errorf("last: %d..%d of %d", s.lo, s.hi, len(s.ids))
	}
	if s, _ := encodeSpan(tm.tok, tokenizer.Text{Raw: "abc"}, "all"); s.lo != 1 || s.hi != 4 {
		t.Errorf("all on raw text (BOS + 3 bytes): %d..%d", s.lo, s.hi)
	}
	if _, err := encodeSpan(tm.tok, tokenizer.Text{Messages: msgs[:1]}, "mean-response"); err == nil || !strings.Contains(err.Error(), "assistant") {
		t.Errorf("a text without a reply: %v", err)
	}
	// A ChatML-like template ends a turn with a special token and a newline: the span still ends
	// with the reply.
	own, _ := tm.tok.ChatTemplate()
	defer tm.tok.SetChatTemplate(own)
	chatml, err := chat.New("{% for m in messages %}<|start_header_id|>{{ m.role }}\n{{ m.content }}<|eom_id|>\n{% endfor %}"+
		"{% if add_generation_prompt %}<|start_header_id|>assistant\n{% endif %}", "chatml-like", chat.Specials{})
	if err != nil {
		t.Fatal(err)
	}
	tm.tok.SetChatTemplate(chatml)
	s, err = encodeSpan(tm.tok, tokenizer.Text{Messages: msgs}, "mean-response")
	if err != nil {
		t.Fatal(err)
	}
	if got := tm.tok.Decode(s.ids[s.lo:s.hi], false); got != "hello you" || s.hi != len(s.ids)-2 {
		t.Errorf("ChatML-like: response span %d..%d of %d decodes to %q", s.lo, s.hi, len(s.ids), got)
	}
}

func TestDeriveErrors(t *testing.T) {
	tm := loadTiny(t, tinyDir(t, 0.3, nil))
	good := []Pair{chatPair("hi", "great!", "fine."), chatPair("yo", "lovely!", "okay.")}
	ok := DeriveOptions{Hook: "hook_resid_post", Layers: []int{1}, Positions: "mean-response", Method: "mean"}
	cases := []struct {
		pairs []Pair
		edit  func(*DeriveOptions)
		want  string
	}{
		{nil, nil, "no pairs"},
		{good, func(o *DeriveOptions) { o.Layers = []int{3} }, "layer 3 is out of range: the model has layers 0 to 2"},
		{good, func(o *DeriveOptions) { o.Layers = nil }, "no layers"},
		{good, func(o *DeriveOptions) { o.Hook = "attn.hook_z" }, "cannot carry a steering vector"},
		{good, func(o *DeriveOptions) { o.Method = "median" }, `method "median"`},
		{good, func(o *DeriveOptions) { o.Positions = "first" }, `positions "first"`},
		{good, func(o *DeriveOptions) { o.HoldOut = 1 }, "held-out fraction 1"},
		{[]Pair{{Positive: good[0].Positive, Negative: tokenizer.Text{Messages: []chat.Message{{Role: "user", Content: "x"}}}, Line: 7}}, nil, "pair on line 7, negative: --positions mean-response needs"},
		{[]Pair{{Positive: tokenizer.Text{Raw: "a"}, Negative: good[0].Negative, Line: 8}}, nil, "pair on line 8, positive: --positions mean-response needs chat messages that end with the assistant's reply; raw text has no reply"},
		{[]Pair{{Positive: tokenizer.Text{Raw: strings.Repeat("a", 600)}, Negative: tokenizer.Text{Raw: "b"}, Line: 3}}, func(o *DeriveOptions) { o.Positions = "all" }, "pair on line 3, positive: 601 tokens, more than the model's 512 positions"},
	}
	for _, c := range cases {
		o := ok
		if c.edit != nil {
			c.edit(&o)
		}
		if _, err := Derive(tm.r, tm.tok, c.pairs, o); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("error %v, want %q", err, c.want)
		}
	}
}

// Batching the texts several to a pass gives the activations one text per pass gives.
func TestDerivePassesAgree(t *testing.T) {
	tm := loadTiny(t, tinyDir(t, 0.3, nil))
	pairs := []Pair{chatPair("hi", "great, thanks!", "fine."), chatPair("how was it?", "lovely!", "it was okay."), chatPair("and you?", "so happy!", "normal.")}
	opts := DeriveOptions{Hook: "hook_resid_mid", Layers: []int{0, 2}, Positions: "mean-response", Method: "pca"}
	one := opts
	one.PassTokens = 1 // every text its own pass
	a, err := Derive(tm.r, tm.tok, pairs, opts)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Derive(tm.r, tm.tok, pairs, one)
	if err != nil {
		t.Fatal(err)
	}
	for k := range a.Layers {
		la, lb := a.Layers[k], b.Layers[k]
		for i := range la.Values {
			if math.Abs(float64(la.Values[i]-lb.Values[i])) > 1e-5 {
				t.Fatalf("layer %d element %d: batched %g, alone %g", la.Index, i, la.Values[i], lb.Values[i])
			}
		}
		if math.Abs(la.MeanNorm-lb.MeanNorm) > 1e-4*la.MeanNorm {
			t.Errorf("mean norms %g and %g", la.MeanNorm, lb.MeanNorm)
		}
	}
}

// On a device, deriving gives back every byte it takes, also when a longer text grows the cache
// between passes, and finds the CPU's vector.
func TestDeriveOnDeviceFreesItsCache(t *testing.T) {
	tm := loadTiny(t, tinyDir(t, 0.3, nil))
	pairs := []Pair{chatPair("hi", "great!", "fine."), chatPair("how was the long walk by the river this morning?", "lovely, thank you so much for asking!", "it was okay, nothing special.")}
	opts := DeriveOptions{Hook: "hook_resid_mid", Layers: []int{0, 2}, Positions: "mean-response", Method: "pca", PassTokens: 1}
	want, err := Derive(tm.r, tm.tok, pairs, opts)
	if err != nil {
		t.Fatal(err)
	}
	d := tensortest.NewDevice(2)
	t.Cleanup(d.Close)
	r := llama.NewRunner(tm.m, d)
	if _, err := Derive(r, tm.tok, pairs, opts); err != nil { // uploads the weights, which stay
		t.Fatal(err)
	}
	live := d.Live
	got, err := Derive(r, tm.tok, pairs, opts)
	if err != nil {
		t.Fatal(err)
	}
	if d.Live != live {
		t.Errorf("%d device allocations left behind by one derive", d.Live-live)
	}
	for k := range want.Layers {
		for i, w := range want.Layers[k].Values {
			if g := got.Layers[k].Values[i]; math.Abs(float64(g-w)) > 1e-5 {
				t.Fatalf("layer %d element %d: device %g, CPU %g", want.Layers[k].Index, i, g, w)
			}
		}
	}
}
