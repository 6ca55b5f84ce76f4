//go:build cuda

package gpu

import (
	"fmt"
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
// strengths gives the CPU's logits. Two sequences of 4 tokens (8 rows: the f32 GEMV path on both
// sides, so the bound is 1e-4 of max |logit| as in TestModelFixtures), steered at a residual
// point with per-sequence strengths and at attn_out in one sequence at two positions.
func TestRunnerSteeringOnDevice(t *testing.T) {
	b := newBackend(t)
	m := randomModel(t, 11)
	c := m.Config
	cpu := tensor.NewCPU(2)
	defer cpu.Close()
	rc, rg := llama.NewRunner(m, cpu), llama.NewRunner(m, b)

	var batch llama.Batch
	for s := int32(0); s < 2; s++ {
		for p := int32(0); p < 4; p++ {
			batch.Tokens = append(batch.Tokens, (s*131+p*29+7)%int32(c.Vocab))
			batch.Seq, batch.Pos = append(batch.Seq, s), append(batch.Pos, p)
			batch.Logits = append(batch.Logits, p == 3)
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
		if err := h.Add("blocks.1.hook_resid_post", hooks.Steer{Vector: vec(), SeqAlpha: map[int32]float32{0: 4, 1: -3}}); err != nil {
			t.Fatal(err)
		}
		if err := h.Add("blocks.0.hook_attn_out", hooks.Steer{Vector: vec(), Alpha: 2, Where: hooks.Where{Seqs: []int32{1}, Positions: []int32{1, 3}}}); err != nil {
			t.Fatal(err)
		}
		return h
	}
	run := func(rn *llama.Runner, h *hooks.Set) []float32 {
		t.Helper()
		logits, err := rn.Forward(batch, rn.NewKVCache(32, 4), h)
		if err != nil {
			t.Fatal(err)
		}
		return append([]float32(nil), logits.F32()...)
	}
	r = rand.New(rand.NewPCG(3, 4))
	want := run(rc, set())
	r = rand.New(rand.NewPCG(3, 4))
	got := run(rg, set())
	closeLogits(t, "steered batch of 2", got, want, 1e-4)

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
	if _, err := rg.Forward(batch, rg.NewKVCache(32, 4), h); err == nil || !strings.Contains(err.Error(), "host memory") {
		t.Fatalf("a read hook on the device: err %v, want one about host memory", err)
	}
}

// ArgmaxRows finds each row's largest logit as the CPU's greedy sampler does, ties going to the
// lowest index; and greedy batched generation through the Runner, which uses it, gives the CPU's
// tokens (prompts of 2 tokens and single-token steps keep both sides on the f32 path).
func TestGreedyBatchOnDevice(t *testing.T) {
	b := newBackend(t)
	const rows, d = 5, 128256
	r := rand.New(rand.NewPCG(7, 8))
	x := make([]float32, rows*d)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	x[1*d+700], x[1*d+90000] = 50, 50 // a tie: the lower index wins
	x[3*d+d-1] = 60                   // the last column
	for k := 4 * d; k < 5*d; k++ {
		x[k] = -1 // a constant row: index 0
	}
	dev := b.Upload(tensor.FromF32(x, rows, d))
	got := make([]int32, rows)
	b.ArgmaxRows(got, dev)
	for i := range rows {
		best := 0
		for k, v := range x[i*d : (i+1)*d] {
			if v > x[i*d+best] {
				best = k
			}
		}
		if got[i] != int32(best) {
			t.Errorf("row %d: argmax %d, want %d", i, got[i], best)
		}
	}

	m := randomModel(t, 12)
	cpu := tensor.NewCPU(2)
	defer cpu.Close()
	var seqs []llama.Sequence
	for s := range 3 {
		seqs = append(seqs, llama.Sequence{Prompt: []int32{int32(3 + s), int32(40 + 7*s)}, MaxTokens: 6, Stop: []int32{}})
	}
	want, _, err := llama.NewRunner(m, cpu).GenerateBatch(seqs, llama.BatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	gotGen, _, err := llama.NewRunner(m, b).GenerateBatch(seqs, llama.BatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range seqs {
		if fmt.Sprint(gotGen[i].Tokens) != fmt.Sprint(want[i].Tokens) {
			t.Errorf("sequence %d: device %v, CPU %v", i, gotGen[i].Tokens, want[i].Tokens)
		}
	}
}
