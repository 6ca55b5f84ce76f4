package llama

import (
	"math"
	"testing"

	"github.com/tillerlm/tiller/hooks"
	"github.com/tillerlm/tiller/tensor"
)

// Backward with a dropped layer (GradDrop) is the gradient of the model in which that layer's
// attention and MLP outputs are constants: checked against central finite differences in F64 with
// the layer's attn_out and mlp_out patched to their clean values, which freezes them. Points
// inside the dropped layer get zero gradient.
func TestBackwardDropLayer(t *testing.T) {
	m, _ := tinyModel(t, tensor.F32, nil)
	r := NewRunnerOf(m, tensor.NewCPU(2), tensor.F64)
	ids := prompt[:7]
	metric := LogitDiff{Row: -1, A: 5, B: 11}
	dims := m.Config.HookDims()
	points := []hooks.Point{{Layer: 0, Kind: hooks.ResidPre}, {Layer: 0, Kind: hooks.AttnOut}, {Layer: 1, Kind: hooks.ResidPre}, {Layer: 1, Kind: hooks.Z}, {Layer: 1, Kind: hooks.Q}, {Layer: 1, Kind: hooks.MLPOut}}
	_, plain, err := r.Gradients(Prompt(0, ids, 0, false), metric, GradOptions{Points: points})
	if err != nil {
		t.Fatal(err)
	}
	_, dropped, err := r.Gradients(Prompt(0, ids, 0, false), metric, GradOptions{Points: points, DropLayers: []int{1}})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"blocks.1.attn.hook_z", "blocks.1.attn.hook_q", "blocks.1.hook_mlp_out"} {
		g, _ := dropped.Points.Get(0, name)
		if g == nil || maxAbs64(g.ToF64()) != 0 {
			t.Errorf("%s: gradient inside the dropped layer is not zero", name)
		}
	}
	// The gradient at resid_pre of the dropped layer is the one at its output, unchanged.
	post, _ := dropped.Points.Get(0, "blocks.1.hook_resid_pre")
	full, _ := plain.Points.Get(0, "blocks.1.hook_resid_pre")
	if maxDiff(post.ToF64(), full.ToF64()) == 0 {
		t.Error("dropping layer 1 left the gradient at its input unchanged")
	}

	// Freeze layer 1's contributions at their clean values, then take finite differences at layer 0.
	read := hooks.NewSet(dims)
	read.Read("blocks.1.hook_attn_out,blocks.1.hook_mlp_out")
	if _, err := r.Forward(Prompt(0, ids, 0, false), r.NewKVCache(len(ids), 4), read); err != nil {
		t.Fatal(err)
	}
	eval := func(p hooks.Point, pos, e int, delta float64) float64 {
		h := hooks.NewSet(dims)
		v := make([]float32, dims.Width(p))
		v[e] = 1
		if err := h.Add(p.Name(), hooks.Steer{Vector: v, Alpha: float32(delta), Where: hooks.Where{Positions: []int32{int32(pos)}}}); err != nil {
			t.Fatal(err)
		}
		if err := h.ReplaceFrom("blocks.1.hook_attn_out,blocks.1.hook_mlp_out", read.Cache, 0, hooks.Where{}); err != nil {
			t.Fatal(err)
		}
		out, err := r.Forward(Prompt(0, ids, 0, false), r.NewKVCache(len(ids), 4), h)
		if err != nil {
			t.Fatal(err)
		}
		v2, _ := metric.Eval(out, tensor.New(tensor.F64, out.Shape...))
		return v2
	}
	const eps = 1e-5
	for _, p := range []hooks.Point{{Layer: 0, Kind: hooks.ResidPre}, {Layer: 0, Kind: hooks.AttnOut}, {Layer: 1, Kind: hooks.ResidPre}} {
		g, _ := dropped.Points.Get(0, p.Name())
		gs := g.ToF64()
		scale := maxAbs64(gs)
		for k := 0; k < 3; k++ {
			pos, e := (2*k+1)%len(ids), (11*k+3)%dims.Width(p)
			fd := (eval(p, pos, e, eps) - eval(p, pos, e, -eps)) / (2 * float64(float32(eps)))
			an := gs[pos*dims.Width(p)+e]
			if math.Abs(fd-an) > 1e-6*max(scale, 1e-3) {
				t.Errorf("%s position %d element %d: dropped-layer backward %.10g, finite difference with layer 1 frozen %.10g", p, pos, e, an, fd)
			}
		}
	}
}

func maxAbs64(v []float64) float64 {
	m := 0.0
	for _, x := range v {
		m = math.Max(m, math.Abs(x))
	}
	return m
}

func maxDiff(a, b []float64) float64 {
	m := 0.0
	for i := range a {
		m = math.Max(m, math.Abs(a[i]-b[i]))
	}
	return m
}

// A logit difference's gradient has two nonzero logits per row, and the LM head's backward
// gathers those two rows of the head instead of multiplying by all of it; asking for weight
// gradients takes the full product. Both give the same gradients at every point (F32, BF16
// weights: the sums differ only in order, so within a few ulps of the gradient's scale).
func TestSparseUnembedBackward(t *testing.T) {
	m, _ := tinyModel(t, tensor.BF16, nil)
	r := newRunner(t, m, 2)
	ids := prompt[:9]
	b := Batch{Tokens: ids, Seq: make([]int32, len(ids)), Pos: make([]int32, len(ids)), Logits: make([]bool, len(ids))}
	for i := range ids {
		b.Pos[i] = int32(i)
		b.Logits[i] = i >= 6 // three rows, each with its own pair of logits
	}
	metric := MetricFunc(func(logits []float64, rows, vocab int) (float64, []float64) {
		g := make([]float64, len(logits))
		v := 0.0
		for r := 0; r < rows; r++ {
			a, c := r*vocab+5+r, r*vocab+40-r
			v += logits[a] - 0.5*logits[c]
			g[a], g[c] = 1, -0.5
		}
		return v, g
	})
	points := []hooks.Point{{Layer: -1, Kind: hooks.FinalNorm}, {Layer: 0, Kind: hooks.ResidPre}, {Layer: 1, Kind: hooks.Z}}
	_, sparse, err := r.Gradients(b, metric, GradOptions{Points: points})
	if err != nil {
		t.Fatal(err)
	}
	_, dense, err := r.Gradients(b, metric, GradOptions{Points: points, Weights: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range points {
		s, _ := sparse.Points.Get(0, p.Name())
		d, _ := dense.Points.Get(0, p.Name())
		sv, dv := s.ToF64(), d.ToF64()
		if diff, scale := maxDiff(sv, dv), maxAbs64(dv); scale == 0 || diff > 1e-5*scale {
			t.Errorf("%s: gathered and full LM-head backward differ by %g (scale %g)", p, diff, scale)
		}
	}
}

// GradOptions.From skips the rows below each sequence's From position: at and after it every
// point's gradient is the whole pass's (the same sums in the same order, in F64), below it zero.
// Sequence 1 has a logit row below its From, whose gradient reaches no wanted position.
func TestBackwardFrom(t *testing.T) {
	m, _ := tinyModel(t, tensor.F32, nil)
	r := NewRunnerOf(m, tensor.NewCPU(2), tensor.F64)
	var b Batch
	for s, ids := range [][]int32{prompt[:9], prompt[2:9]} {
		for i, id := range ids {
			b.Tokens = append(b.Tokens, id)
			b.Seq = append(b.Seq, int32(s))
			b.Pos = append(b.Pos, int32(i))
			b.Logits = append(b.Logits, (s == 0 && i == 8) || (s == 1 && (i == 3 || i == 6)))
		}
	}
	metric := MetricFunc(func(logits []float64, rows, vocab int) (float64, []float64) {
		g := make([]float64, len(logits))
		v := 0.0
		for r := 0; r < rows; r++ {
			a, c := r*vocab+5+r, r*vocab+40-r
			v += logits[a] - logits[c]
			g[a], g[c] = 1, -1
		}
		return v, g
	})
	var points []hooks.Point
	for l := 0; l < m.Config.Layers; l++ {
		for _, k := range []hooks.Kind{hooks.ResidPre, hooks.Q, hooks.K, hooks.V, hooks.Pattern, hooks.Z, hooks.AttnOut, hooks.ResidMid, hooks.MLPPost, hooks.MLPOut, hooks.ResidPost} {
			points = append(points, hooks.Point{Layer: l, Kind: k})
		}
	}
	points = append(points, hooks.Point{Layer: -1, Kind: hooks.Embed}, hooks.Point{Layer: -1, Kind: hooks.FinalNorm})
	from := map[int32]int32{0: 3, 1: 5}
	_, full, err := r.Gradients(b, metric, GradOptions{Points: points})
	if err != nil {
		t.Fatal(err)
	}
	_, cut, err := r.Gradients(b, metric, GradOptions{Points: points, From: from})
	if err != nil {
		t.Fatal(err)
	}
	dims := m.Config.HookDims()
	for s := int32(0); s < 2; s++ {
		below := 0.0
		for _, p := range points {
			f, _ := full.Points.Get(s, p.Name())
			c, _ := cut.Points.Get(s, p.Name())
			fv, cv := f.ToF64(), c.ToF64()
			if len(fv) != len(cv) {
				t.Fatalf("seq %d %s: shapes %v and %v", s, p, f.Shape, c.Shape)
			}
			// Position of element i: the row, or for the pattern (head, pos_q, pos_k) the query.
			pos := func(i int) int { return i / dims.Width(p) }
			if p.Kind == hooks.Pattern {
				pos = func(i int) int { return i / f.Shape[2] % f.Shape[1] }
			}
			scale := maxAbs64(fv)
			for i := range fv {
				switch {
				case int32(pos(i)) < from[s] && cv[i] != 0:
					t.Fatalf("seq %d %s element %d at position %d, below From: %g", s, p, i, pos(i), cv[i])
				case int32(pos(i)) < from[s]:
					below = max(below, math.Abs(fv[i]))
				case math.Abs(fv[i]-cv[i]) > 1e-12*scale:
					t.Fatalf("seq %d %s element %d at position %d: %g, whole pass %g", s, p, i, pos(i), cv[i], fv[i])
				}
			}
		}
		if below == 0 {
			t.Errorf("seq %d: the whole pass has no gradient below From either; the test checks nothing there", s)
		}
	}
	if _, _, err := r.Gradients(b, metric, GradOptions{From: from, Weights: true}); err == nil {
		t.Error("From with Weights: no error")
	}
}

// A dropped-layer pass that resumes from a Resumable pass gives what the whole dropped pass gives
// at every point (the same sums in the same order, in F64), with and without From.
func TestBackwardResume(t *testing.T) {
	m, _ := tinyModel(t, tensor.F32, map[string]any{"num_hidden_layers": 3})
	r := NewRunnerOf(m, tensor.NewCPU(2), tensor.F64)
	ids := prompt[:9]
	b := Prompt(0, ids, 0, false)
	rec, logits, err := r.Record(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	dlogits := tensor.New(logits.DType, logits.Shape...)
	if _, err := (LogitDiff{Row: -1, A: 5, B: 11}).Eval(logits, dlogits); err != nil {
		t.Fatal(err)
	}
	var points []hooks.Point
	for l := 0; l < m.Config.Layers; l++ {
		for _, k := range []hooks.Kind{hooks.ResidPre, hooks.K, hooks.Pattern, hooks.Z, hooks.AttnOut, hooks.MLPOut, hooks.ResidPost} {
			points = append(points, hooks.Point{Layer: l, Kind: k})
		}
	}
	points = append(points, hooks.Point{Layer: -1, Kind: hooks.Embed}, hooks.Point{Layer: -1, Kind: hooks.FinalNorm})
	for _, from := range []map[int32]int32{nil, {0: 4}} {
		plain, err := r.Backward(rec, dlogits, GradOptions{Points: points, From: from, Resumable: true})
		if err != nil {
			t.Fatal(err)
		}
		for l := 0; l < m.Config.Layers; l++ {
			whole, err := r.Backward(rec, dlogits, GradOptions{Points: points, From: from, DropLayers: []int{l}})
			if err != nil {
				t.Fatal(err)
			}
			resumed, err := r.Backward(rec, dlogits, GradOptions{Points: points, From: from, DropLayers: []int{l}, Resume: plain})
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range points {
				w, _ := whole.Points.Get(0, p.Name())
				g, ok := resumed.Points.Get(0, p.Name())
				if !ok {
					t.Fatalf("from %v, layer %d dropped: no %s in the resumed pass", from, l, p)
				}
				if d := maxDiff(w.ToF64(), g.ToF64()); d != 0 || len(w.Data) != len(g.Data) {
					t.Errorf("from %v, layer %d dropped: %s differs by %g resumed", from, l, p, d)
				}
			}
		}
	}
	if _, err := r.Backward(rec, dlogits, GradOptions{DropLayers: []int{1}, Resume: &Grads{}}); err == nil {
		t.Error("Resume of a pass that was not Resumable: no error")
	}
}

// A runner's second recorded and backward pass reuses the buffers the first gave back (its
// spares) and gives the same gradients, bit for bit, as a fresh runner: no spare is handed out
// twice or keeps the values of its last use where zeros are due.
func TestSparesReused(t *testing.T) {
	m, _ := tinyModel(t, tensor.BF16, nil)
	b := Prompt(0, prompt[:9], 0, false)
	metric := MetricFunc(func(logits []float64, rows, vocab int) (float64, []float64) {
		g := make([]float64, len(logits))
		g[5], g[40] = 1, -1
		return logits[5] - logits[40], g
	})
	var points []hooks.Point
	for l := 0; l < m.Config.Layers; l++ {
		for _, k := range []hooks.Kind{hooks.ResidPre, hooks.Q, hooks.K, hooks.V, hooks.Z, hooks.AttnOut, hooks.MLPPost, hooks.MLPOut} {
			points = append(points, hooks.Point{Layer: l, Kind: k})
		}
	}
	grads := func(r *Runner, from int32) *hooks.Cache {
		_, g, err := r.Gradients(b, metric, GradOptions{Points: points, From: map[int32]int32{0: from}})
		if err != nil {
			t.Fatal(err)
		}
		return g.Points
	}
	r := newRunner(t, m, 2)
	grads(r, 0)
	if r.spare.bytes == 0 {
		t.Fatal("no buffers came back to the runner after a recorded and backward pass")
	}
	for _, from := range []int32{3, 0} {
		got, want := grads(r, from), grads(newRunner(t, m, 2), from)
		for _, p := range points {
			g, _ := got.Get(0, p.Name())
			w, _ := want.Get(0, p.Name())
			gv, wv := g.ToF32(), w.ToF32()
			if maxAbs(wv) == 0 {
				t.Fatalf("from %d, %s: zero gradient; the test checks nothing", from, p.Name())
			}
			for i := range wv {
				if gv[i] != wv[i] {
					t.Fatalf("from %d, %s element %d: %g after reuse, %g from a fresh runner", from, p.Name(), i, gv[i], wv[i])
				}
			}
		}
	}
}
