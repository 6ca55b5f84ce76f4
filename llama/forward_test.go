package llama

import (
	"fmt"
	"strings"
	"testing"

	"github.com/tillerlm/tiller/tensor"
)

var prompt = []int32{1, 40, 41, 5, 96, 0, 13, 13, 70, 33, 8}

// Logits from one prefill of the whole sequence equal those of a short prefill followed by one
// token at a time through the KV cache. Both are F32 over the same weights; only the order of
// summation differs between the batched and single-token matmul paths, so 1e-5 of the logit
// range is ample.
func TestPrefillMatchesDecode(t *testing.T) {
	for _, dt := range []tensor.DType{tensor.F32, tensor.BF16, tensor.F16} {
		t.Run(dt.String(), func(t *testing.T) {
			m, _ := tinyModel(t, dt, nil)
			r := newRunner(t, m, 2)
			vocab := m.Config.Vocab
			full, err := r.Forward(Prompt(0, prompt, 0, true), r.NewKVCache(len(prompt), 4), nil)
			if err != nil {
				t.Fatal(err)
			}
			want := append([]float32(nil), full.F32()...)
			if maxAbs(want) < 1 {
				t.Fatalf("logits within ±%g: the random model is too weak for this test", maxAbs(want))
			}
			kv := r.NewKVCache(len(prompt), 4)
			got, err := r.Forward(Prompt(0, prompt[:3], 0, true), kv, nil)
			if err != nil {
				t.Fatal(err)
			}
			rows := append([]float32(nil), got.F32()...)
			for i := 3; i < len(prompt); i++ {
				out, err := r.Forward(Prompt(0, prompt[i:i+1], i, false), kv, nil)
				if err != nil {
					t.Fatal(err)
				}
				rows = append(rows, out.F32()...)
			}
			if len(rows) != len(prompt)*vocab {
				t.Fatalf("%d logits, want %d", len(rows), len(prompt)*vocab)
			}
			closeRows(t, "decode vs prefill", rows, want, 1e-5)
		})
	}
}

// Sequences run together in one batch — a prefill beside decode steps of other sequences, tokens
// interleaved — give each sequence the logits it gets alone.
func TestBatchMatchesAlone(t *testing.T) {
	m, _ := tinyModel(t, tensor.BF16, nil)
	r := newRunner(t, m, 3)
	seqs := [][]int32{prompt, {1, 9, 9, 9}, {1, 50, 60, 70, 80, 90, 14}}
	alone := make([][]float32, len(seqs))
	for s, toks := range seqs {
		out, err := r.Forward(Prompt(0, toks, 0, true), r.NewKVCache(len(toks), 4), nil)
		if err != nil {
			t.Fatal(err)
		}
		alone[s] = append([]float32(nil), out.F32()...)
	}
	// Step 1: first 2 tokens of sequence 0 and 1 and 5 of sequence 2, interleaved. Sequence ids
	// 3, 5 and 4 in the cache: ids need not be dense or ordered.
	ids := []int32{3, 5, 4}
	kv := r.NewKVCache(64, 4)
	got := make([][]float32, len(seqs))
	step := func(upto []int) {
		var b Batch
		from := make([]int, len(seqs))
		for s := range seqs {
			from[s] = len(got[s]) / m.Config.Vocab
		}
		for k := 0; ; k++ {
			added := false
			for s, toks := range seqs {
				if p := from[s] + k; p < upto[s] && p < len(toks) {
					b.Tokens, b.Seq, b.Pos = append(b.Tokens, toks[p]), append(b.Seq, ids[s]), append(b.Pos, int32(p))
					b.Logits = append(b.Logits, true)
					added = true
				}
			}
			if !added {
				break
			}
		}
		out, err := r.Forward(b, kv, nil)
		if err != nil {
			t.Fatal(err)
		}
		v := out.F32()
		for i := range b.Tokens {
			s := map[int32]int{3: 0, 5: 1, 4: 2}[b.Seq[i]]
			got[s] = append(got[s], v[i*m.Config.Vocab:(i+1)*m.Config.Vocab]...)
		}
	}
	step([]int{2, 1, 5})
	step([]int{3, 2, 6})
	step([]int{len(prompt), 4, 7})
	for s := range seqs {
		closeRows(t, fmt.Sprintf("sequence %d", s), got[s], alone[s], 1e-5)
	}
}

// A decode step of a fixed shape allocates nothing once the runner has seen that shape.
func TestDecodeAllocatesNothing(t *testing.T) {
	m, _ := tinyModel(t, tensor.BF16, nil)
	r := newRunner(t, m, 2)
	kv := r.NewKVCache(64, 16)
	if _, err := r.Forward(Prompt(0, prompt, 0, false), kv, nil); err != nil {
		t.Fatal(err)
	}
	step := Batch{Tokens: []int32{5}, Seq: []int32{0}, Pos: []int32{int32(len(prompt))}, Logits: []bool{true}}
	if _, err := r.Forward(step, kv, nil); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(20, func() {
		if _, err := r.Forward(step, kv, nil); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("a decode step allocates %.1f times", allocs)
	}
	s := NewSampler(SamplerConfig{Temperature: 0.8, TopK: 20, TopP: 0.9, MinP: 0.01, RepetitionPenalty: 1.1, Seed: 3}, m.Config.Vocab)
	logits, _ := r.Forward(step, kv, nil)
	s.Sample(logits.F32(), prompt)
	if allocs := testing.AllocsPerRun(20, func() { s.Sample(logits.F32(), prompt) }); allocs != 0 {
		t.Errorf("sampling allocates %.1f times", allocs)
	}
}

func TestForwardRejectsBadBatches(t *testing.T) {
	m, _ := tinyModel(t, tensor.F32, nil)
	r := newRunner(t, m, 1)
	kv := r.NewKVCache(64, 16)
	cases := []struct {
		b    Batch
		want string
	}{
		{Batch{}, "empty batch"},
		{Prompt(0, []int32{1, 97}, 0, false), "id 97, outside the vocabulary of 97"},
		{Prompt(0, []int32{1, -1}, 0, false), "id -1"},
		{Prompt(0, []int32{1, 2}, 63, false), "position 64; the model takes positions 0 to 63"},
		{Batch{Tokens: []int32{1}, Seq: []int32{0, 1}, Pos: []int32{0}}, "2 sequence ids"},
		{Batch{Tokens: []int32{1}, Seq: []int32{-2}, Pos: []int32{0}}, "sequence id -2"},
	}
	for _, c := range cases {
		if _, err := r.Forward(c.b, kv, nil); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("batch %+v: error %v, want %q", c.b, err, c.want)
		}
	}
	small := r.NewKVCache(8, 4)
	if _, err := r.Forward(Prompt(0, prompt, 0, false), small, nil); err == nil || !strings.Contains(err.Error(), "KV cache full") {
		t.Errorf("prompt past the cache: %v", err)
	}
}
