//go:build cuda

package gpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/tillerlm/tiller/hooks"
	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/tensor"
)

// opsOnly is the backend without its decode steps: a runner on it runs every pass op by op.
type opsOnly struct{ *Backend }

// NewDecodeSteps hides the backend's (a different signature: opsOnly is no llama.DecodeBackend).
func (opsOnly) NewDecodeSteps() {}

// stepRows is one decode step's batch: rows sequences of prompts of different lengths, prefilled
// op by op into both caches, then the step feeding token tok of each at the position after it.
type stepRows struct {
	batch   llama.Batch
	prompts [][]int32
}

func newStepRows(c *llama.Config, rows, seed int) stepRows {
	var s stepRows
	for i := 0; i < rows; i++ {
		n := 3 + (i*7+seed)%19
		p := make([]int32, n)
		for k := range p {
			p[k] = int32((i*131 + k*29 + seed*17 + 5) % c.Vocab)
		}
		s.prompts = append(s.prompts, p)
		s.batch.Tokens = append(s.batch.Tokens, int32((i*53+seed)%c.Vocab))
		s.batch.Seq, s.batch.Pos = append(s.batch.Seq, int32(i)), append(s.batch.Pos, int32(n))
		s.batch.Logits = append(s.batch.Logits, true)
	}
	return s
}

// prefill fills kv with every prompt through r, op by op.
func (s stepRows) prefill(t *testing.T, r *llama.Runner, kv *tensor.KVCache) {
	t.Helper()
	for i, p := range s.prompts {
		if _, err := r.Forward(llama.Prompt(int32(i), p, 0, false), kv, nil); err != nil {
			t.Fatal(err)
		}
		if err := kv.Reserve(i, len(p)+8); err != nil {
			t.Fatal(err)
		}
	}
}

// advance moves every row one position on, feeding the token it was given.
func (s *stepRows) advance() {
	for i := range s.batch.Pos {
		s.batch.Pos[i]++
		s.batch.Tokens[i] = (s.batch.Tokens[i]*7 + 3) % 997
	}
}

// steering is a hook set adding at the points a step folds in, with strengths per sequence and
// one addition restricted to positions, and the same additions as decode-step terms.
func steering(c *llama.Config, rows int, seed uint64) *hooks.Set {
	r := rand.New(rand.NewPCG(seed, 5))
	vec := func() []float32 {
		v := make([]float32, c.Dim)
		for i := range v {
			v[i] = float32(r.NormFloat64())
		}
		return v
	}
	alpha := map[int32]float32{}
	for i := 0; i < rows; i++ {
		alpha[int32(i)] = float32(i%3) - 1
	}
	h := hooks.NewSet(c.HookDims())
	for _, a := range []struct {
		name string
		st   hooks.Steer
	}{
		{"hook_embed", hooks.Steer{Vector: vec(), Alpha: 0.5}},
		{"blocks.0.hook_resid_post", hooks.Steer{Vector: vec(), SeqAlpha: alpha}},
		{"blocks.0.hook_resid_post", hooks.Steer{Vector: vec(), Alpha: 1.5}},
		{"blocks.1.hook_attn_out", hooks.Steer{Vector: vec(), Alpha: 2, Where: hooks.Where{Seqs: []int32{0, 2}}}},
		{"blocks.1.hook_resid_mid", hooks.Steer{Vector: vec(), SeqAlpha: alpha}},
		{fmt.Sprintf("blocks.%d.hook_mlp_out", c.Layers-1), hooks.Steer{Vector: vec(), Alpha: -1}},
	} {
		if err := h.Add(a.name, a.st); err != nil {
			panic(err)
		}
	}
	return h
}

// terms is a hook set's additions as decode-step terms for a batch.
func terms(h *hooks.Set, b llama.Batch) []llama.PointTerms {
	var out []llama.PointTerms
	for _, p := range h.ActivePoints(nil) {
		out = append(out, llama.PointTerms{Point: p, Terms: h.Terms(nil, p, b.Seq, b.Pos)})
	}
	return out
}

// The decode step against the same pass op by op, over 4 steps of 1, 3, 8, 9 and 33 rows (the
// fused form, the GEMV and the split-K GEMM ranges), unsteered and steered at every kind of point
// it folds (hook_embed, resid_post with two additions, attn_out at some rows, resid_mid, mlp_out),
// in every form (fused, batched; RoPE with the attention or not; graph or not), over F32 and BF16
// caches. Both sides compute in f32 with the same products for the row count, differing in the
// order of f32 sums (the fused norms, RoPE inside the attention): 1e-4 of max |logit| (F32
// cache); a BF16 cache rounds each new key the same way on both sides unless RoPE's last bit
// differs, moving a score by 2⁻⁹: 1e-3.
func TestStepsAgainstOps(t *testing.T) {
	b := newBackend(t)
	b.SyncEachOp = false
	for _, m := range []*llama.Model{randomModel(t, 31), randomModelOf(t, 512, 1024, 4, 1, 2, 2048, 32)} {
		c := m.Config
		rOps := llama.NewRunner(m, opsOnly{b})
		type form struct{ fused, rope, graph bool }
		for _, f := range []form{{true, true, true}, {true, true, false}, {false, true, true}, {false, false, true}, {false, false, false}} {
			if (f.fused || f.rope) && b.cc < 90 {
				continue
			}
			for _, dt := range []tensor.DType{tensor.F32, tensor.BF16} {
				for _, rows := range []int{1, 3, 8, 9, 33} {
					for _, steered := range []bool{false, true} {
						what := fmt.Sprintf("head_dim %d, %+v, %s cache, %d rows, steered %v", c.HeadDim, f, dt, rows, steered)
						s, err := NewSteps(b, rOps.Model, 64)
						if err != nil || s == nil {
							t.Fatalf("%s: NewSteps: %v", what, err)
						}
						s.Fused, s.RoPE, s.UseGraph = f.fused && s.Fused, f.rope, f.graph
						s.PDL = s.Fused
						kvS := tensor.NewKVCacheOf(b, dt, c.Layers, c.KVHeads, c.HeadDim, 8, rows*6)
						kvO := tensor.NewKVCacheOf(b, dt, c.Layers, c.KVHeads, c.HeadDim, 8, rows*6)
						sr := newStepRows(c, rows, rows)
						sr.prefill(t, rOps, kvS)
						sr.prefill(t, rOps, kvO)
						var h *hooks.Set
						if steered {
							h = steering(c, rows, uint64(rows))
						}
						bound := 1e-4
						if dt == tensor.BF16 {
							bound = 1e-3
						}
						for step := 0; step < 4; step++ {
							var st []llama.PointTerms
							if h != nil {
								st = terms(h, sr.batch)
							}
							got, err := s.Step(sr.batch, kvS, st)
							if err != nil {
								t.Fatalf("%s: %v", what, err)
							}
							gh := tensor.New(tensor.F32, got.Shape...)
							b.Download(gh, got)
							want, err := rOps.Forward(sr.batch, kvO, h)
							if err != nil {
								t.Fatal(err)
							}
							closeLogits(t, fmt.Sprintf("%s, step %d", what, step), gh.F32(), want.F32(), bound)
							sr.advance()
						}
						s.Close()
						rOps.FreeKVCache(kvS)
						rOps.FreeKVCache(kvO)
					}
				}
			}
		}
	}
}

// With Deterministic the step runs the ops' kernels in the ops' order: a step's logits are the
// bits of the same rows through Runner.Forward op by op, at 1, 5 and 33 rows, steered.
func TestStepsDeterministic(t *testing.T) {
	b := newBackend(t)
	b.SyncEachOp = false
	b.SetBatchInvariant(true)
	m := randomModelOf(t, 512, 1024, 4, 1, 2, 2048, 33)
	c := m.Config
	rOps := llama.NewRunner(m, opsOnly{b})
	for _, rows := range []int{1, 5, 33} {
		s, err := NewSteps(b, rOps.Model, 64)
		if err != nil || s == nil {
			t.Fatalf("NewSteps: %v", err)
		}
		kvS := rOps.NewKVCache(rows*48, 8)
		kvO := rOps.NewKVCache(rows*48, 8)
		sr := newStepRows(c, rows, 7)
		sr.prefill(t, rOps, kvS)
		sr.prefill(t, rOps, kvO)
		h := steering(c, rows, 9)
		for step := 0; step < 3; step++ {
			got, err := s.Step(sr.batch, kvS, terms(h, sr.batch))
			if err != nil {
				t.Fatal(err)
			}
			gh := tensor.New(tensor.F32, got.Shape...)
			b.Download(gh, got)
			want, err := rOps.Forward(sr.batch, kvO, h)
			if err != nil {
				t.Fatal(err)
			}
			sameBits(t, fmt.Sprintf("deterministic step of %d rows, step %d, against the ops", rows, step), gh.F32(), want.F32())
			sr.advance()
		}
		s.Close()
		rOps.FreeKVCache(kvS)
		rOps.FreeKVCache(kvO)
	}
}

func sameBits(t *testing.T, what string, got, want []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range got {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("%s: value %d is %g, want %g bit for bit", what, i, got[i], want[i])
		}
	}
	t.Logf("%s: %d values, the same bits", what, len(got))
}

// Batch invariance on the device (Runner.SetDeterministic): a prompt's logits are the same bits
// prefilled alone and packed among other prompts, before, between and after them (past 64 rows,
// where the products cut rows into launches), and its decode step the same bits alone and at
// every position of steps of 2, 9 and 40 rows (through the decode step, which the runner uses for
// them) — at F32 and at the analysis precision of attribution, over F32 and BF16 caches.
func TestBatchInvarianceOnDevice(t *testing.T) {
	b := newBackend(t)
	b.SyncEachOp = false
	m := randomModelOf(t, 512, 1024, 4, 1, 2, 2048, 34)
	c := m.Config
	for _, mode := range []struct {
		name     string
		analysis bool
		kv       bool
	}{{"inference, f32 cache", false, false}, {"inference, bf16 cache", false, true}, {"analysis precision", true, false}} {
		b.ExactMatMul, b.ExactAttention = mode.analysis, mode.analysis
		r := llama.NewRunner(m, b)
		r.SetDeterministic(true)
		if err := r.SetPrecision(llama.Precision{KVBF16: mode.kv}); err != nil {
			t.Fatal(err)
		}
		prompt := newStepRows(c, 1, 3).prompts[0]
		others := newStepRows(c, 40, 4).prompts
		forward := func(bt llama.Batch) []float32 {
			kv := r.NewKVCache(4096, 16)
			defer r.FreeKVCache(kv)
			out, err := r.Forward(bt, kv, nil)
			if err != nil {
				t.Fatal(err)
			}
			return append([]float32(nil), out.F32()...)
		}
		pack := func(ps ...[]int32) (llama.Batch, int) {
			var bt llama.Batch
			at := -1
			for s, p := range ps {
				if &p[0] == &prompt[0] {
					at = len(bt.Tokens)
				}
				q := llama.Prompt(int32(s), p, 0, true)
				bt.Tokens, bt.Seq, bt.Pos, bt.Logits = append(bt.Tokens, q.Tokens...), append(bt.Seq, q.Seq...), append(bt.Pos, q.Pos...), append(bt.Logits, q.Logits...)
			}
			return bt, at
		}
		alone, _ := pack(prompt)
		want := forward(alone)
		for _, layout := range [][][]int32{{others[0], prompt}, {prompt, others[1], others[2]}, append(append([][]int32{}, others[3:10]...), prompt, others[10])} {
			bt, at := pack(layout...)
			got := forward(bt)
			sameBits(t, mode.name+": prefill among other prompts", got[at*c.Vocab:(at+len(prompt))*c.Vocab], want)
		}
		decode := func(rows [][]int32, of int) []float32 {
			kv := r.NewKVCache(4096, 16)
			defer r.FreeKVCache(kv)
			var step llama.Batch
			for s, p := range rows {
				if _, err := r.Forward(llama.Prompt(int32(s), p[:len(p)-1], 0, false), kv, nil); err != nil {
					t.Fatal(err)
				}
				step.Tokens, step.Seq, step.Pos = append(step.Tokens, p[len(p)-1]), append(step.Seq, int32(s)), append(step.Pos, int32(len(p)-1))
				step.Logits = append(step.Logits, true)
			}
			out, err := r.Forward(step, kv, nil)
			if err != nil {
				t.Fatal(err)
			}
			return append([]float32(nil), out.F32()[of*c.Vocab:(of+1)*c.Vocab]...)
		}
		want = decode([][]int32{prompt}, 0)
		for _, n := range []int{2, 9, 40} {
			for _, at := range []int{0, n / 2, n - 1} {
				rows := append(append(append([][]int32{}, others[:at]...), prompt), others[at:n-1]...)
				sameBits(t, fmt.Sprintf("%s: decode step at row %d of %d", mode.name, at, n), decode(rows, at), want)
			}
		}
	}
	b.ExactMatMul, b.ExactAttention = false, false
	b.SetBatchInvariant(false)
}

// A BF16 KV cache through the runner (Precision.KVBF16): the logits of a prefill and of decode
// steps move from the F32 cache's by the rounding of keys and values to 8 significant bits — a
// few thousandths of their range on this random model — and do move (the cache was used).
func TestBF16KVCacheOnDevice(t *testing.T) {
	b := newBackend(t)
	b.SyncEachOp = false
	m := randomModelOf(t, 512, 1024, 4, 1, 2, 2048, 35)
	run := func(bf16 bool) []float32 {
		r := llama.NewRunner(m, b)
		if err := r.SetPrecision(llama.Precision{KVBF16: bf16}); err != nil {
			t.Fatal(err)
		}
		kv := r.NewKVCache(256, 16)
		defer r.FreeKVCache(kv)
		if got := kv.DType(); (got == tensor.BF16) != bf16 {
			t.Fatalf("NewKVCache made a %s cache with KVBF16 %v", got, bf16)
		}
		prompt := newStepRows(m.Config, 1, 5).prompts[0]
		var all []float32
		out, err := r.Forward(llama.Prompt(0, prompt, 0, true), kv, nil)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, out.F32()...)
		for s := 0; s < 6; s++ {
			out, err = r.Forward(llama.Prompt(0, []int32{int32(s * 11)}, len(prompt)+s, false), kv, nil)
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, out.F32()...)
		}
		return all
	}
	exact, fast := run(false), run(true)
	closeLogits(t, "bf16 KV cache against f32", fast, exact, 3e-2)
	if slices.Equal(fast, exact) {
		t.Error("the bf16 KV cache gives the f32 cache's logits bit for bit: it was not used")
	}
}
