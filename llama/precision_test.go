package llama

import (
	"math"
	"strings"
	"testing"

	"github.com/tillerlm/tiller/tensor"
)

// precisionModel is the tiny model with a head size of 16, which the CPU's vector attention
// kernels take.
func precisionModel(t *testing.T) *Model {
	m, _ := tinyModel(t, tensor.BF16, map[string]any{"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2})
	if m.Config.HeadDim != 16 {
		t.Fatalf("head_dim %d, want 16", m.Config.HeadDim)
	}
	return m
}

func logitsOf(t *testing.T, r *Runner, ids []int32) []float32 {
	t.Helper()
	out, err := r.Forward(Prompt(0, ids, 0, true), r.NewKVCache(len(ids), 4), nil)
	if err != nil {
		t.Fatal(err)
	}
	return append([]float32(nil), out.F32()...)
}

// A BF16 KV cache moves the logits by the rounding of keys and values to 8 significant bits
// (2⁻⁹ relative each). This random model's large weights (initializer_range 0.3) make scores of
// several units, so a key's rounding moves a score by up to ~10 × 2⁻⁹ ≈ 2e-2 and the logits by
// about 1e-2 of their range (1.3e-2 seen); the bound is 3e-2. They must move, or the cache was
// not used. Recording for the backward pass stays exact.
func TestPrecisionKVBF16(t *testing.T) {
	m := precisionModel(t)
	r := newRunner(t, m, 2)
	exact := logitsOf(t, r, prompt)
	if err := r.SetPrecision(Precision{KVBF16: true}); err != nil {
		t.Fatal(err)
	}
	if dt := r.NewKVCache(8, 4).DType(); dt != tensor.BF16 {
		t.Fatalf("NewKVCache makes a %s cache, want BF16", dt)
	}
	fast := logitsOf(t, r, prompt)
	closeRows(t, "bf16 KV cache against F32", fast, exact, 3e-2)
	same := true
	for i := range fast {
		same = same && fast[i] == exact[i]
	}
	if same {
		t.Error("the bf16 KV cache gives the F32 logits bit for bit: it was not used")
	}
	_, recorded, err := r.Record(Prompt(0, prompt, 0, true), nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range recorded.F32() {
		if math.Float32bits(v) != math.Float32bits(exact[i]) {
			t.Fatalf("recorded logit %d is %g, want the exact run's %g", i, v, exact[i])
		}
	}
}

// bf16 compute rounds the activations entering every matrix product of a prefill to 8 significant
// bits (2⁻⁹ ≈ 2e-3 relative each), so each product's output moves by about 2e-3 of its scale; over
// the 15 products from token to logit of this random model, whose large weights make attention
// sharp, that adds up to 2.6e-2 of the logit range; the bound is 6e-2. A prompt of 40 tokens runs
// through the GEMM, where the mode applies; the logits must move, and a recording stays exact.
func TestPrecisionComputeBF16(t *testing.T) {
	m := precisionModel(t)
	r := newRunner(t, m, 2)
	ids := make([]int32, 40)
	for i := range ids {
		ids[i] = int32((i*31 + 7) % m.Config.Vocab)
	}
	exact := logitsOf(t, r, ids)
	if err := r.SetPrecision(Precision{ComputeBF16: true}); err != nil {
		t.Fatal(err)
	}
	fast := logitsOf(t, r, ids)
	closeRows(t, "bf16 compute against F32", fast, exact, 6e-2)
	same := true
	for i := range fast {
		same = same && fast[i] == exact[i]
	}
	if same {
		t.Error("bf16 compute gives the F32 logits bit for bit: it was not used")
	}
	_, recorded, err := r.Record(Prompt(0, ids, 0, true), nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range recorded.F32() {
		if math.Float32bits(v) != math.Float32bits(exact[i]) {
			t.Fatalf("recorded logit %d is %g, want the exact run's %g", i, v, exact[i])
		}
	}
}

func TestPrecisionNeedsF32OnTheCPU(t *testing.T) {
	m := precisionModel(t)
	b := tensor.NewCPU(1)
	defer b.Close()
	r := NewRunnerOf(m, b, tensor.F64)
	for _, p := range []Precision{{KVBF16: true}, {ComputeBF16: true}} {
		if err := r.SetPrecision(p); err == nil || !strings.Contains(err.Error(), "F32") {
			t.Errorf("F64 runner with %+v: %v", p, err)
		}
	}
	if err := r.SetPrecision(Precision{}); err != nil {
		t.Errorf("exact precision on an F64 runner: %v", err)
	}
}
