package llama

import (
	"math"
	"testing"

	"github.com/tillerlm/tiller/tensor"
)

// packed is a batch of whole prompts, sequence i at positions 0…, logits at every token; at
// gives, for each prompt, the batch row of its first token.
func packed(prompts ...[]int32) (b Batch, at []int) {
	for s, p := range prompts {
		at = append(at, len(b.Tokens))
		q := Prompt(int32(s), p, 0, true)
		b.Tokens, b.Seq, b.Pos, b.Logits = append(b.Tokens, q.Tokens...), append(b.Seq, q.Seq...), append(b.Pos, q.Pos...), append(b.Logits, q.Logits...)
	}
	return b, at
}

// sameBitsRows fails unless got and want are the same float32 bits.
func sameBitsRows(t *testing.T, what string, got, want []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range got {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("%s: value %d (row %d) is %g, alone it is %g: the logits depend on the batch", what, i, i/97, got[i], want[i])
		}
	}
}

// batchInvariance checks that a prompt's logits are the same bits whatever batch it runs in and
// wherever it sits in it — for the prefill of the prompt, packed with others of other lengths
// before and after it, and for decode steps of one token per sequence, alone and among 2, 5 and
// 9 rows (past the backends' small-batch kernels), at every row position.
func batchInvariance(t *testing.T, r *Runner) {
	a := prompt
	others := [][]int32{prompt[2:9], prompt[:4], prompt[5:], {7, 7, 7}, prompt[1:10], prompt[3:6], prompt[:9], {42}}
	logitsOf := func(b Batch, kv *tensor.KVCache) []float32 {
		t.Helper()
		out, err := r.Forward(b, kv, nil)
		if err != nil {
			t.Fatal(err)
		}
		return append([]float32(nil), out.F32()...)
	}
	vocab := r.Model.Config.Vocab
	newCache := func() *tensor.KVCache {
		kv := r.NewKVCache(16*64, 16)
		t.Cleanup(func() { r.FreeKVCache(kv) })
		return kv
	}

	// Prefill: a alone, then a among other prompts, at the front, in the middle and at the end.
	alone, _ := packed(a)
	want := logitsOf(alone, newCache())
	for _, layout := range [][][]int32{{a, others[0]}, {others[0], a}, {others[1], a, others[2]}, {others[3], others[4], others[5], a}} {
		b, at := packed(layout...)
		k := 0
		for i, p := range layout {
			if &p[0] == &a[0] {
				k = at[i]
			}
		}
		got := logitsOf(b, newCache())
		sameBitsRows(t, "prefill among other prompts", got[k*vocab:(k+len(a))*vocab], want)
	}

	// Decode: every sequence prefilled alone, then one step with one token of each, the sequence
	// of a at every row position of batches of 1, 2, 5 and 9 rows.
	decode := func(rows [][]int32, of int) []float32 {
		kv := newCache()
		var step Batch
		for s, p := range rows {
			if len(p) > 1 {
				logitsOf(Prompt(int32(s), p[:len(p)-1], 0, false), kv)
			}
			step.Tokens, step.Seq, step.Pos = append(step.Tokens, p[len(p)-1]), append(step.Seq, int32(s)), append(step.Pos, int32(len(p)-1))
			step.Logits = append(step.Logits, true)
		}
		got := logitsOf(step, kv)
		return got[of*vocab : (of+1)*vocab]
	}
	want = decode([][]int32{a}, 0)
	for _, n := range []int{2, 5, 9} {
		for at := 0; at < n; at++ {
			rows := make([][]int32, 0, n)
			rows = append(rows, others[:at]...)
			rows = append(rows, a)
			rows = append(rows, others[at:n-1]...)
			sameBitsRows(t, "a decode step among other rows", decode(rows, at), want)
		}
	}
}

// A deterministic runner on the CPU backend gives bit-identical logits for a prompt in any
// batch, at any position, prefill and decode — with F32 and BF16 weights, and through batches
// larger than one chunk of its products.
func TestBatchInvarianceCPU(t *testing.T) {
	for _, dt := range []tensor.DType{tensor.F32, tensor.BF16} {
		m, _ := tinyModel(t, dt, nil)
		r := newRunner(t, m, 2)
		r.SetDeterministic(true)
		batchInvariance(t, r)
	}
}

// The same on the device stand-in, whose tensors live outside the host's view as a GPU's do.
func TestBatchInvarianceDevice(t *testing.T) {
	m, _ := tinyModel(t, tensor.BF16, nil)
	r, _ := deviceRunner(t, m)
	r.SetDeterministic(true)
	batchInvariance(t, r)
}

// Without the deterministic mode the CPU picks its product kernel by batch size, and a prompt's
// logits move with its batch: the mode is what the invariance above rests on.
func TestBatchVariesWithoutDeterministic(t *testing.T) {
	m, _ := tinyModel(t, tensor.F32, nil)
	r := newRunner(t, m, 2)
	alone, _ := packed(prompt)
	b, at := packed(prompt[2:9], prompt)
	out, err := r.Forward(alone, r.NewKVCache(64, 16), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := append([]float32(nil), out.F32()...)
	out, err = r.Forward(b, r.NewKVCache(128, 16), nil)
	if err != nil {
		t.Fatal(err)
	}
	vocab := m.Config.Vocab
	got := out.F32()[at[1]*vocab : (at[1]+len(prompt))*vocab]
	for i := range got {
		if got[i] != want[i] {
			return
		}
	}
	t.Skip("this CPU backend's products are batch-invariant without the deterministic mode")
}
