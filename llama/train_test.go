package llama

import (
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/tillerlm/tiller/tensor"
)

func TestAdamWSchedule(t *testing.T) {
	o := NewAdamW(1e-3, 10, 110)
	if r := o.Rate(0); math.Abs(r-1e-4) > 1e-12 {
		t.Errorf("first warmup step %g, want 1e-4", r)
	}
	if r := o.Rate(9); math.Abs(r-1e-3) > 1e-12 {
		t.Errorf("end of warmup %g, want 1e-3", r)
	}
	if r := o.Rate(60); math.Abs(r-(1e-4+0.9e-3*0.5)) > 1e-12 {
		t.Errorf("half way down the cosine %g", r)
	}
	if r := o.Rate(500); math.Abs(r-1e-4) > 1e-12 {
		t.Errorf("after the end %g, want the minimum 1e-4", r)
	}
}

// A 2-layer model learns one fixed batch by heart: the next-token loss falls from about log(vocab)
// to near zero (the sequences start differently, so every target is determined). This is the training loop's end-to-end check (the gradients themselves are checked
// against PyTorch and finite differences elsewhere).
func TestOverfitOneBatch(t *testing.T) {
	m, _ := tinyModel(t, tensor.F32, map[string]any{"initializer_range": 0.02, "num_hidden_layers": 2})
	m = m.Materialize(tensor.F32)
	r := newRunner(t, m, 2)
	var b Batch
	for s, seq := range [][]int32{{1, 40, 41, 42, 43, 44, 45, 46}, {3, 50, 51, 52, 50, 51, 52, 2}} {
		for p, tok := range seq {
			b.Tokens, b.Seq, b.Pos = append(b.Tokens, tok), append(b.Seq, int32(s)), append(b.Pos, int32(p))
			b.Logits = append(b.Logits, true)
		}
	}
	ce, err := NewCrossEntropy(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ce.Targets() != 14 {
		t.Fatalf("%d targets, want 14 (7 per sequence)", ce.Targets())
	}
	opt := NewAdamW(1e-2, 5, 120)
	var first, last float64
	for step := 0; step < 120; step++ {
		loss, g, err := r.Gradients(b, ce, GradOptions{Weights: true})
		if err != nil {
			t.Fatal(err)
		}
		if step == 0 {
			first = loss
		}
		last = loss
		if _, _, err := opt.Step(m, g.Weights); err != nil {
			t.Fatal(err)
		}
	}
	if math.Abs(first-math.Log(97)) > 0.5 {
		t.Errorf("initial loss %.3f, want about log(97) = %.3f", first, math.Log(97))
	}
	if last > 0.05 {
		t.Errorf("loss after 120 steps on one batch: %.4f (from %.3f), want < 0.05", last, first)
	}
}

// NewRandom draws the same weights as WriteRandom for the same config and seed.
func TestNewRandomMatchesWriteRandom(t *testing.T) {
	m, _ := tinyModel(t, tensor.F32, nil) // WriteRandom with seed 7
	n, err := NewRandom(m.Config, 7)
	if err != nil {
		t.Fatal(err)
	}
	mw, nw := m.Weights(), n.Weights()
	for i := range mw {
		a, b := (*mw[i].Dst).F32(), (*nw[i].Dst).F32()
		for k := range a {
			if a[k] != b[k] {
				t.Fatalf("%s[%d]: written %g, in memory %g", mw[i].Name, k, a[k], b[k])
			}
		}
	}
}

// Train lowers the held-out loss of a tiny model on a learnable toy language (each sequence counts
// up from a random start), and reports every step.
func TestTrainLearnsToCount(t *testing.T) {
	m, _ := tinyModel(t, tensor.F32, map[string]any{"initializer_range": 0.05})
	r := newRunner(t, m.Materialize(tensor.F32), 2)
	seqs := func(n, seed int) [][]int32 {
		var out [][]int32
		for i := 0; i < n; i++ {
			s := int32(4 + (i*31+seed)%70)
			seq := []int32{1}
			for k := int32(0); k < 12; k++ {
				seq = append(seq, s+k)
			}
			out = append(out, seq)
		}
		return out
	}
	train, held := seqs(64, 0), seqs(8, 17)
	before, err := EvalLoss(r, held, 16, 8)
	if err != nil {
		t.Fatal(err)
	}
	var steps []TrainStep
	err = Train(r, train, held, TrainOptions{Steps: 60, Batch: 8, SeqLen: 16, LR: 1e-2, Warmup: 5, Seed: 1,
		OnStep: func(s TrainStep) error { steps = append(steps, s); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	after := steps[len(steps)-1].HeldOut
	if len(steps) != 60 || math.IsNaN(after) || after > before/3 {
		t.Errorf("%d steps; held-out loss %.3f → %.3f, want it to fall below a third", len(steps), before, after)
	}
	if err := Train(r, nil, nil, TrainOptions{Steps: 1, Batch: 1, SeqLen: 4, LR: 1}); err == nil {
		t.Error("training with no examples accepted")
	}
}

// A model saved in F32 and loaded back gives the same logits bit for bit.
func TestSaveLoad(t *testing.T) {
	m, dir := tinyModel(t, tensor.BF16, nil)
	cfg, _ := os.ReadFile(filepath.Join(dir, "config.json"))
	out := t.TempDir()
	if err := m.Materialize(tensor.F32).Save(out, cfg, nil, tensor.F32); err != nil {
		t.Fatal(err)
	}
	back, err := Load(out, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	if back.Layers[1].WUp.DType != tensor.F32 || back.Config.DType != "float32" {
		t.Errorf("saved as %s, config %q", back.Layers[1].WUp.DType, back.Config.DType)
	}
	a := run(t, newRunner(t, m, 1), prompt, nil)
	b := run(t, newRunner(t, back, 1), prompt, nil)
	sameBits(t, "saved and reloaded", b, a)
}
