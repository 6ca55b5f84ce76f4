package llama

import (
	"strings"
	"testing"

	"github.com/tillerlm/tiller/tensor"
)

// RecordAlong runs an unrecorded batch in the recorded pass: the along sequences' logits are those
// of a forward pass that takes the shared prefix from the record (PrefixKV), the record and its
// gradients those of recording the batch alone — up to F32 rounding, the products running over a
// larger batch — and bad unrecorded batches are errors that say what is wrong.
func TestRecordAlong(t *testing.T) {
	m, _ := tinyModel(t, tensor.F32, nil)
	r := newRunner(t, m, 2)
	clean := []int32{1, 5, 9, 13, 17, 21, 25, 29, 33, 37}
	corrupt := []int32{1, 5, 9, 40, 17, 21, 44, 29, 33, 37}
	b := Prompt(0, clean, 0, false)
	along := Prompt(1, corrupt[3:], 3, false)

	rec, want, err := r.Record(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantClean := append([]float32(nil), want.F32()...)
	kv := r.NewKVCache(32, 16)
	if err := r.PrefixKV(rec, kv, map[int32]int32{0: 3}); err != nil { // into a cache of its own
		t.Fatal(err)
	}
	wantAlong, err := r.Forward(Prompt(0, corrupt[3:], 3, false), kv, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantAlongRow := append([]float32(nil), wantAlong.F32()...)
	dl := tensor.New(tensor.F32, 1, m.Config.Vocab)
	dl.F32()[3], dl.F32()[8] = 1, -1
	wantGrad, err := r.Backward(rec, dl, GradOptions{Weights: true})
	if err != nil {
		t.Fatal(err)
	}
	wantWQ := append([]float32(nil), wantGrad.Weights["model.layers.0.self_attn.q_proj.weight"].F32()...)
	rec.Release()

	rec, got, err := r.RecordAlong(b, nil, along, map[int32]Shared{1: {Seq: 0, N: 3}})
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Release()
	if got.Rows() != 2 {
		t.Fatalf("%d rows of logits, want 2 (the recorded batch's, then the other's)", got.Rows())
	}
	closeRows(t, "recorded logits", got.Slice(0, 1).F32(), wantClean, 1e-5)
	closeRows(t, "unrecorded logits", got.Slice(1, 2).F32(), wantAlongRow, 1e-5)
	g, err := r.Backward(rec, dl, GradOptions{Weights: true})
	if err != nil {
		t.Fatal(err)
	}
	closeRows(t, "q_proj gradient", g.Weights["model.layers.0.self_attn.q_proj.weight"].F32(), wantWQ, 1e-5)

	for _, c := range []struct {
		along  Batch
		prefix map[int32]Shared
		msg    string
	}{
		{Prompt(0, corrupt, 0, false), nil, "sequence 0 is in both"},
		{along, nil, "want 0"},
		{along, map[int32]Shared{1: {Seq: 2, N: 3}}, "does not hold"},
		{along, map[int32]Shared{1: {Seq: 0, N: 11}}, "does not hold"},
		{Prompt(1, []int32{1, 1 << 20}, 0, false), nil, "unrecorded batch"},
	} {
		if _, _, err := r.RecordAlong(b, nil, c.along, c.prefix); err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("RecordAlong: error %v, want one saying %q", err, c.msg)
		}
	}
}
