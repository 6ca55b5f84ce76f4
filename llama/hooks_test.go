package llama

import (
	"fmt"
	"math"
	"testing"

	"github.com/tillerlm/tiller/hooks"
	"github.com/tillerlm/tiller/tensor"
)

// run returns the logits of one whole-sequence forward with hooks h.
func run(t *testing.T, r *Runner, ids []int32, h *hooks.Set) []float32 {
	t.Helper()
	out, err := r.Forward(Prompt(0, ids, 0, true), r.NewKVCache(len(ids), 4), h)
	if err != nil {
		t.Fatal(err)
	}
	return append([]float32(nil), out.F32()...)
}

func sameBits(t *testing.T, what string, got, want []float32) {
	t.Helper()
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("%s: logit %d is %g, want %g bit for bit", what, i, got[i], want[i])
		}
	}
}

// Reading every hook point leaves the logits bit for bit as they are, and patching every point
// (except the pattern, which the fused path never forms) with the run's own cached values does too.
func TestHooksAreTransparent(t *testing.T) {
	m, _ := tinyModel(t, tensor.BF16, nil)
	r := newRunner(t, m, 2)
	plain := run(t, r, prompt, nil)
	read := hooks.NewSet(m.Config.HookDims())
	if err := read.Read("*,blocks.*.*,blocks.*.*.*,ln_final.*"); err != nil {
		t.Fatal(err)
	}
	sameBits(t, "reading every hook", run(t, r, prompt, read), plain)
	if n := len(read.Cache.Names(0)); n != hooks.Count(m.Config.Layers) {
		t.Errorf("cached %d points, want all %d", n, hooks.Count(m.Config.Layers))
	}
	patch := hooks.NewSet(m.Config.HookDims())
	if err := patch.ReplaceFrom("hook_embed,blocks.*.hook_*,blocks.*.attn.hook_[qkvz],blocks.*.mlp.hook_post", read.Cache, 0, hooks.Where{}); err != nil {
		t.Fatal(err)
	}
	sameBits(t, "patching every point with its own value", run(t, r, prompt, patch), plain)
}

// Patching resid_pre of layer 0 (everything the layers see) from run B turns run A's logits into B's.
func TestPatchResidPreFromAnotherRun(t *testing.T) {
	m, _ := tinyModel(t, tensor.F32, nil)
	r := newRunner(t, m, 2)
	b := []int32{1, 7, 7, 30, 31, 32, 60, 2, 9, 90, 44}
	read := hooks.NewSet(m.Config.HookDims())
	read.Read("blocks.0.hook_resid_pre")
	want := run(t, r, b, read)
	patch := hooks.NewSet(m.Config.HookDims())
	if err := patch.ReplaceFrom("blocks.0.hook_resid_pre", read.Cache, 0, hooks.Where{}); err != nil {
		t.Fatal(err)
	}
	sameBits(t, "A patched with B's resid_pre", run(t, r, prompt, patch), want)
	// Patching only the last position changes only the last row.
	last := hooks.NewSet(m.Config.HookDims())
	last.ReplaceFrom("blocks.0.hook_resid_pre", read.Cache, 0, hooks.Where{Positions: []int32{int32(len(prompt) - 1)}})
	got, plain := run(t, r, prompt, last), run(t, r, prompt, nil)
	v := m.Config.Vocab
	sameBits(t, "rows before the patched position", got[:(len(prompt)-1)*v], plain[:(len(prompt)-1)*v])
	if got[len(got)-1] == plain[len(plain)-1] {
		t.Error("patching the last position did not change its logits")
	}
}

// The explicit attention path (probabilities formed for hook_pattern) computes what the fused
// attention computes, and its probabilities are causal rows that sum to 1.
func TestPatternPath(t *testing.T) {
	m, _ := tinyModel(t, tensor.F32, nil)
	r := newRunner(t, m, 1)
	h := hooks.NewSet(m.Config.HookDims())
	h.Read("blocks.1.attn.hook_pattern")
	closeRows(t, "explicit vs fused attention", run(t, r, prompt, h), run(t, r, prompt, nil), 1e-6)
	p, _ := h.Cache.Get(0, "blocks.1.attn.hook_pattern")
	n := len(prompt)
	if p.String() != fmt.Sprintf("F32[%d %d %d]", m.Config.Heads, n, n) {
		t.Fatalf("pattern %v", p)
	}
	for hd := 0; hd < m.Config.Heads; hd++ {
		for q := 0; q < n; q++ {
			var sum float64
			for k := 0; k < n; k++ {
				v := float64(p.F32()[(hd*n+q)*n+k])
				if k > q && v != 0 {
					t.Fatalf("head %d query %d attends to later key %d: %g", hd, q, k, v)
				}
				sum += v
			}
			if math.Abs(sum-1) > 1e-5 {
				t.Fatalf("head %d query %d: probabilities sum to %g", hd, q, sum)
			}
		}
	}
	// Patching the pattern of head 0 to attend only to BOS changes the output.
	bos := tensor.New(tensor.F32, m.Config.Heads, n, n)
	for q := 0; q < n; q++ {
		bos.F32()[(0*n+q)*n] = 1
	}
	patched := hooks.NewSet(m.Config.HookDims())
	if err := patched.Replace("blocks.1.attn.hook_pattern", bos, hooks.Where{Heads: []int{0}}); err != nil {
		t.Fatal(err)
	}
	if got := run(t, r, prompt, patched); got[len(got)-1] == run(t, r, prompt, nil)[len(got)-1] {
		t.Error("patching head 0's pattern changed nothing")
	}
}

// Steering with strength 0 is no intervention at all.
func TestSteerZeroIsIdentity(t *testing.T) {
	m, _ := tinyModel(t, tensor.BF16, nil)
	r := newRunner(t, m, 2)
	v := make([]float32, m.Config.Dim)
	for i := range v {
		v[i] = float32(i%7) - 3
	}
	h := hooks.NewSet(m.Config.HookDims())
	h.Add("blocks.*.hook_resid_post", hooks.Steer{Vector: v, Alpha: 0})
	sameBits(t, "strength 0", run(t, r, prompt, h), run(t, r, nil2(prompt), nil))
	h = hooks.NewSet(m.Config.HookDims())
	h.Add("blocks.0.hook_resid_post", hooks.Steer{Vector: v, Alpha: 4})
	if got := run(t, r, prompt, h); got[0] == run(t, r, prompt, nil)[0] {
		t.Error("strength 4 changed nothing")
	}
}

func nil2(ids []int32) []int32 { return ids }

// The gradient of the whole model at every hook point (but the pattern) against central finite
// differences in F64: nudging one element of one position by ±ε through an additive hook, the
// metric moves by 2ε·gradient to O(ε²). Relative error ≤ 1e-6 of the gradient's scale at that point.
func TestBackwardFiniteDifferences(t *testing.T) {
	for _, over := range []map[string]any{nil, {"attention_bias": true, "mlp_bias": true, "tie_word_embeddings": true}} {
		m, _ := tinyModel(t, tensor.F32, over)
		r := NewRunnerOf(m, tensor.NewCPU(2), tensor.F64)
		ids := prompt[:7]
		metric := LogitDiff{Row: -1, A: 5, B: 11}
		var points []hooks.Point
		for _, p := range hooks.All(m.Config.Layers) {
			if p.Kind != hooks.Pattern {
				points = append(points, p)
			}
		}
		_, g, err := r.Gradients(Prompt(0, ids, 0, false), metric, GradOptions{Points: points})
		if err != nil {
			t.Fatal(err)
		}
		dims := m.Config.HookDims()
		eval := func(h *hooks.Set) float64 {
			out, err := r.Forward(Prompt(0, ids, 0, false), r.NewKVCache(len(ids), 4), h)
			if err != nil {
				t.Fatal(err)
			}
			d := tensor.New(tensor.F64, out.Shape...)
			v, _ := metric.Eval(out, d)
			return v
		}
		const eps = 1e-5
		worst := 0.0
		defer func() { t.Logf("largest finite-difference error: %.2g of the gradient's scale", worst) }()
		for pi, p := range points {
			grad, ok := g.Points.Get(0, p.Name())
			if !ok {
				t.Fatalf("no gradient at %s", p)
			}
			gs := grad.ToF64()
			scale := 0.0
			for _, v := range gs {
				scale = math.Max(scale, math.Abs(v))
			}
			if scale == 0 && p.Kind != hooks.FinalNorm {
				t.Errorf("%s: gradient is zero everywhere", p)
			}
			width := dims.Width(p)
			// Two coordinates per point: spread over positions and elements.
			for k := 0; k < 2; k++ {
				pos := (pi + 3*k) % len(ids)
				if p.Kind == hooks.FinalNorm {
					pos = len(ids) - 1 // the final norm is formed only where logits are: the last token
				}
				e := (7*pi + 5*k) % width
				nudge := func(sign float64) float64 {
					v := make([]float32, width)
					v[e] = 1
					h := hooks.NewSet(dims)
					where := hooks.Where{Positions: []int32{int32(pos)}}
					if err := h.Add(p.Name(), hooks.Steer{Vector: v, Alpha: float32(sign * eps), Where: where}); err != nil {
						t.Fatal(err)
					}
					return eval(h)
				}
				fd := (nudge(1) - nudge(-1)) / (2 * float64(float32(eps)))
				an := gs[pos*width+e]
				worst = math.Max(worst, math.Abs(fd-an)/math.Max(scale, 1e-3))
				if math.Abs(fd-an) > 1e-6*math.Max(scale, 1e-3) {
					t.Errorf("%s position %d element %d: backward %.12g, finite difference %.12g (scale %.3g)", p, pos, e, an, fd, scale)
				}
			}
		}
	}
}
