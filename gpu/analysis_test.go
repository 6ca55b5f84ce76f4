//go:build cuda

package gpu

import (
	"fmt"
	"math"
	"testing"

	"github.com/tillerlm/tiller/attrib"
	"github.com/tillerlm/tiller/hooks"
	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/tensor"
	"github.com/tillerlm/tiller/tensor/tensortest"
)

// At analysis precision every op, the matrix products of more than 8 rows included
// (kernels/gemm_exact.cu: exact products, f32 sums), meets the f32 bound of the conformance suite.
func TestExactMatMul(t *testing.T) {
	b := newBackend(t)
	b.SetAnalysis()
	tensortest.Run(t, b, tensortest.F32)
}

// analysisRunners opens the device at analysis precision and gives a random bf16 checkpoint at
// head_dim 128 with GQA groups of 4, as Llama-3.1-8B, small enough for the CPU reference, with a
// runner on the CPU and one on the device.
func analysisRunners(t *testing.T) (b *Backend, m *llama.Model, cpu, device *llama.Runner) {
	b = newBackend(t)
	b.SyncEachOp = false // whole-model runs: faults show at the next download anyway
	b.SetAnalysis()
	m = randomModelOf(t, 512, 1024, 4, 1, 3, 2048, 9)
	c := tensor.NewCPU(2)
	t.Cleanup(c.Close)
	return b, m, llama.NewRunner(m, c), llama.NewRunner(m, b)
}

// A prompt batch of two sequences (64 and 40 tokens, interleaved in blocks as attribution lays
// pairs out), asking for logits at rows of both.
func analysisBatch(vocab int) llama.Batch {
	var b llama.Batch
	for s, n := range []int{64, 40} {
		for p := 0; p < n; p++ {
			b.Tokens = append(b.Tokens, int32((p*37+11+s*5)%vocab))
			b.Seq, b.Pos = append(b.Seq, int32(s)), append(b.Pos, int32(p))
			b.Logits = append(b.Logits, p == n-1 || (s == 0 && p == 50))
		}
	}
	return b
}

// The backward pass on the GPU at analysis precision against the CPU's F32 pass, at every hook
// point, for a logit difference and a log-probability, through the fused attention backward and
// through the pattern, with From and a dropped layer resumed. Both compute in f32 with exact
// products; they differ in summation order (GEMM blocking, the online softmax), ~1e-6 per op: the
// bound is 1e-4 of each point's largest gradient. The device gives back every byte it took.
func TestGradientsOnDevice(t *testing.T) {
	b, m, rc, rg := analysisRunners(t)
	bt := analysisBatch(m.Config.Vocab)
	var points []hooks.Point
	for l := 0; l < m.Config.Layers; l++ {
		for _, k := range []hooks.Kind{hooks.ResidPre, hooks.Q, hooks.K, hooks.V, hooks.Z, hooks.AttnOut, hooks.ResidMid, hooks.MLPPost, hooks.MLPOut, hooks.ResidPost} {
			points = append(points, hooks.Point{Layer: l, Kind: k})
		}
	}
	points = append(points, hooks.Point{Layer: 1, Kind: hooks.Pattern}, hooks.Point{Layer: -1, Kind: hooks.Embed}, hooks.Point{Layer: -1, Kind: hooks.FinalNorm})
	if _, err := rg.Forward(bt, rg.NewKVCache(128, 16), nil); err != nil { // the runner's state, once
		t.Fatal(err)
	}
	inUse := b.pool.inUse
	for _, metric := range []llama.Metric{llama.LogitDiff{Row: 1, A: 5, B: 11}, llama.LogProb{Rows: []int{0, 1, 2}, Tokens: []int32{4, 9, 60}}} {
		for _, opt := range []llama.GradOptions{{Points: points}, {Points: points, From: map[int32]int32{0: 20, 1: 7}}} {
			what := fmt.Sprintf("%T from %v", metric, opt.From)
			vc, gc, err := rc.Gradients(bt, metric, opt)
			if err != nil {
				t.Fatal(err)
			}
			vg, gg, err := rg.Gradients(bt, metric, opt)
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(vg-vc) > 1e-4*max(1, math.Abs(vc)) {
				t.Errorf("%s: metric %g on the GPU, %g on the CPU", what, vg, vc)
			}
			closeGrads(t, what, gg.Points, gc.Points)
		}
	}
	// GradDrop's dropped layer, resumed, as attribution runs it: whole-batch gradients on the device.
	rec, logits, err := rg.Record(bt, nil)
	if err != nil {
		t.Fatal(err)
	}
	dl := tensor.New(tensor.F32, logits.Shape...)
	llama.LogitDiff{Row: 1, A: 5, B: 11}.Eval(logits, dl)
	plain, err := rg.Backward(rec, dl, llama.GradOptions{Points: points, Resumable: true, Batched: true})
	if err != nil {
		t.Fatal(err)
	}
	dropped, err := rg.Backward(rec, dl, llama.GradOptions{Points: points, DropLayers: []int{1}, Resume: plain, Batched: true})
	if err != nil {
		t.Fatal(err)
	}
	_, want, err := rc.Gradients(bt, llama.LogitDiff{Row: 1, A: 5, B: 11}, llama.GradOptions{Points: points, DropLayers: []int{1}})
	if err != nil {
		t.Fatal(err)
	}
	got := hooks.NewCache()
	var rowSeq, rowPos []int32 // the logit rows, where ln_final's gradient lives
	for i := range bt.Tokens {
		if bt.Logits[i] {
			rowSeq, rowPos = append(rowSeq, bt.Seq[i]), append(rowPos, bt.Pos[i])
		}
	}
	for p, x := range dropped.Batch {
		h := tensor.New(x.DType, x.Shape...)
		b.Download(h, x)
		if p.Kind == hooks.FinalNorm {
			got.Put(p, m.Config.HookDims(), h, rowSeq, rowPos)
		} else {
			got.Put(p, m.Config.HookDims(), h, bt.Seq, bt.Pos)
		}
	}
	closeGrads(t, "layer 1 dropped, resumed, whole-batch", got, want.Points)
	dropped.Release()
	plain.Release()
	rec.Release()
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	if b.pool.inUse != inUse {
		t.Errorf("%d bytes of device memory in use after the passes, %d before", b.pool.inUse, inUse)
	}
}

// closeGrads holds every point of want (by sequence) to the bound of TestGradientsOnDevice.
func closeGrads(t *testing.T, what string, got, want *hooks.Cache) {
	t.Helper()
	for _, s := range want.Seqs() {
		for _, name := range want.Names(s) {
			w, _ := want.Get(s, name)
			g, ok := got.Get(s, name)
			if !ok {
				t.Errorf("%s: no %s for sequence %d", what, name, s)
				continue
			}
			if w.Numel() != g.Numel() {
				t.Errorf("%s: %s of sequence %d has %v, want %v", what, name, s, g.Shape, w.Shape)
				continue
			}
			wv, gv := w.ToF64(), g.ToF64()
			scale, worst, at := 0.0, 0.0, 0
			for i := range wv {
				scale = math.Max(scale, math.Abs(wv[i]))
				if d := math.Abs(gv[i] - wv[i]); !(d <= worst) {
					worst, at = d, i
				}
			}
			if !(worst <= 1e-4*scale) {
				t.Errorf("%s: %s of sequence %d: max |Δ| %g at %d (GPU %g, CPU %g) exceeds 1e-4 × %g", what, name, s, worst, at, gv[at], wv[at], scale)
			}
		}
	}
}

// Hooks on the GPU: reads, captures, patches of whole rows, of one head and of the pattern, and
// a read, a patch and an addition at one point, against the same hooks on the CPU (f32 bound:
// analysis precision on both sides).
func TestHooksOnGPU(t *testing.T) {
	b, m, rc, rg := analysisRunners(t)
	dims := m.Config.HookDims()
	prompt := make([]int32, 40)
	for i := range prompt {
		prompt[i] = int32((i*53 + 7) % m.Config.Vocab)
	}
	src := make([]int32, 40)
	for i := range src {
		src[i] = int32((i*29 + 3) % m.Config.Vocab)
	}
	read := func(r *llama.Runner) *hooks.Set {
		h := hooks.NewSet(dims)
		if err := h.Read("blocks.*.hook_resid_pre,blocks.1.attn.hook_z,blocks.1.attn.hook_pattern"); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Forward(llama.Prompt(0, src, 0, true), r.NewKVCache(64, 16), h); err != nil {
			t.Fatal(err)
		}
		return h
	}
	hc, hg := read(rc), read(rg)
	for _, name := range hc.Cache.Names(0) {
		w, _ := hc.Cache.Get(0, name)
		g, _ := hg.Cache.Get(0, name)
		closeLogits(t, "read "+name, g.F32(), w.F32(), 1e-5)
	}
	v := make([]float32, m.Config.Dim)
	for i := range v {
		v[i] = float32(i%5) - 2
	}
	for _, c := range []struct {
		name  string
		build func(h *hooks.Set) error
	}{
		{"resid_pre", func(h *hooks.Set) error { return h.ReplaceFrom("blocks.0.hook_resid_pre", hc.Cache, 0, hooks.Where{}) }},
		{"one head of z", func(h *hooks.Set) error {
			return h.ReplaceFrom("blocks.1.attn.hook_z", hc.Cache, 0, hooks.Where{Positions: []int32{38, 39}, Heads: []int{2}})
		}},
		{"the pattern of head 1", func(h *hooks.Set) error {
			return h.ReplaceFrom("blocks.1.attn.hook_pattern", hc.Cache, 0, hooks.Where{Heads: []int{1}})
		}},
		{"read, patch, add", func(h *hooks.Set) error {
			if err := h.Capture("blocks.1.hook_resid_pre"); err != nil {
				return err
			}
			if err := h.ReplaceFrom("blocks.1.hook_resid_pre", hc.Cache, 0, hooks.Where{Positions: []int32{3}}); err != nil {
				return err
			}
			return h.Add("blocks.1.hook_resid_pre", hooks.Steer{Vector: v, Alpha: 0.5})
		}},
	} {
		run := func(r *llama.Runner) []float32 {
			h := hooks.NewSet(dims)
			if err := c.build(h); err != nil {
				t.Fatal(err)
			}
			out, err := r.Forward(llama.Prompt(0, prompt, 0, true), r.NewKVCache(64, 16), h)
			if err != nil {
				t.Fatal(err)
			}
			if r == rg {
				h.Release(b)
			}
			return append([]float32(nil), out.F32()...)
		}
		closeLogits(t, "patched "+c.name, run(rg), run(rc), 1e-4)
	}
}

// AtP, AtP* and exact patching on the GPU against the CPU's F32 path: every pair's every grid
// within 1e-4 of its largest value (analysis precision on both sides, so the runs differ by f32
// rounding, and the AtP* QK fix's RoPE in f32 on the device against f64 on the CPU path), and the
// device memory the run takes given back.
func TestAttributionOnGPU(t *testing.T) {
	b, m, rc, rg := analysisRunners(t)
	var ins []*attrib.Input
	for i, n := range []int{24, 31, 24} {
		clean := make([]int32, n)
		for p := range clean {
			clean[p] = int32((p*41 + 13*i + 1) % m.Config.Vocab)
		}
		corrupt := append([]int32(nil), clean...)
		corrupt[n/2], corrupt[n-3] = 700, 701
		in := &attrib.Input{Line: i + 1, Clean: clean, Corrupt: corrupt, A: 5, B: 7, Metric: attrib.MetricSpec{LogitDiff: []string{"a", "b"}}}
		if i == 1 {
			in.Cont, in.Metric = []int32{17, 23, 5}, attrib.MetricSpec{LogProb: "x"}
		}
		for range clean {
			in.Labels = append(in.Labels, "t")
		}
		ins = append(ins, in)
	}
	opt := attrib.Options{Star: true, Verify: attrib.VerifyAll, Batch: 2}
	want, err := attrib.Run(rc, ins, opt)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := attrib.Run(rg, ins, opt); err != nil { // the runner's state at its largest, once
		t.Fatal(err)
	}
	inUse := b.pool.inUse
	got, err := attrib.Run(rg, ins, opt)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	if b.pool.inUse > inUse {
		t.Errorf("%d bytes of device memory in use after attribution, %d before", b.pool.inUse, inUse)
	}
	for i := range ins {
		for meth, grids := range want.Pairs[i].Scores {
			for k, w := range grids {
				if w == nil {
					continue
				}
				g := got.Pairs[i].Scores[meth][k]
				scale, worst := 0.0, 0.0
				for j, x := range w.Data {
					if !math.IsNaN(x) {
						scale = math.Max(scale, math.Abs(x))
						worst = math.Max(worst, math.Abs(g.Data[j]-x))
					}
				}
				if !(worst <= 1e-4*scale) {
					t.Errorf("pair %d method %d %v: max |Δ| %g against a grid scale of %g", i, meth, w.Kind, worst, scale)
				}
			}
		}
	}
	t.Logf("AtP vs exact on the GPU: %+v", got.Verified.Stats[len(got.Verified.Stats)-1])
}
