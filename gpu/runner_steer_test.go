//go:build cuda

package gpu

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/tillerlm/tiller/hooks"
	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/tensor"
)

// Steering through llama.Runner on the device: additions registered in a hooks.Set run on the
// GPU's activations as one uploaded delta per point, so a batch of sequences with their own
// strengths gives the CPU's logits. Two sequences of 6 tokens (the f32 GEMV path on both sides,
// so the bound is 1e-4 of max |logit| as in TestModelFixtures), steered at a residual point and
// at attn_out with per-sequence strengths, one of them 0.
func TestRunnerSteeringOnDevice(t *testing.T) {
	b := newBackend(t)
	m := randomModel(t, 11)
	c := m.Config
	cpu := tensor.NewCPU(2)
	defer cpu.Close()
	rc, rg := llama.NewRunner(m, cpu), llama.NewRunner(m, b)

	var batch llama.Batch
	for s := int32(0); s < 3; s++ {
		for p := int32(0); p < 6; p++ {
			batch.Tokens = append(batch.Tokens, (s*131+p*29+7)%int32(c.Vocab))
			batch.Seq, batch.Pos = append(batch.Seq, s), append(batch.Pos, p)
			batch.Logits = append(batch.Logits, p == 5)
		}
	}
	r := rand.New(rand.NewPCG(3, 4))
	vec := func() []float32 {
		v := make([]float32, c.Dim)
		for i := range v {
			v[i] = float32(r.NormFloat64())
		}
		return v
	}
	set := func() *hooks.Set {
		h := hooks.NewSet(c.HookDims())
		if err := h.Add("blocks.1.hook_resid_post", hooks.Steer{Vector: vec(), SeqAlpha: map[int32]float32{0: 4, 1: 0, 2: -3}}); err != nil {
			t.Fatal(err)
		}
		if err := h.Add("blocks.0.hook_attn_out", hooks.Steer{Vector: vec(), Alpha: 2, Where: hooks.Where{Positions: []int32{1, 4}}}); err != nil {
			t.Fatal(err)
		}
		return h
	}
	run := func(rn *llama.Runner, h *hooks.Set) []float32 {
		t.Helper()
		logits, err := rn.Forward(batch, rn.NewKVCache(8, 4), h)
		if err != nil {
			t.Fatal(err)
		}
		return append([]float32(nil), logits.F32()...)
	}
	r = rand.New(rand.NewPCG(3, 4))
	want := run(rc, set())
	r = rand.New(rand.NewPCG(3, 4))
	got := run(rg, set())
	closeLogits(t, "steered batch of 3", got, want, 1e-4)

	// The steering must matter far beyond that bound, or the comparison shows nothing.
	plain := run(rc, nil)
	var moved, scale float64
	for i := range want {
		moved = max(moved, math.Abs(float64(want[i]-plain[i])))
		scale = max(scale, math.Abs(float64(want[i])))
	}
	if moved < 1e-2*scale {
		t.Fatalf("steering moved the logits by only %.3g of their scale %.3g", moved, scale)
	}

	// Reading activations needs them on the host: a clear error, not a wrong answer.
	h := hooks.NewSet(c.HookDims())
	if err := h.Read("blocks.0.hook_resid_post"); err != nil {
		t.Fatal(err)
	}
	if _, err := rg.Forward(batch, rg.NewKVCache(8, 4), h); err == nil || !strings.Contains(err.Error(), "host memory") {
		t.Fatalf("a read hook on the device: err %v, want one about host memory", err)
	}
}
