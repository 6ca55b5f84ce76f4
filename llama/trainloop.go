package llama

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/tillerlm/tiller/tensor"
)

// NewRandom builds a model with random F32 weights in memory, drawn exactly as WriteRandom draws
// them for the same config and seed (so `tiller init` and training start from the same weights).
func NewRandom(cfg *Config, seed uint64) (*Model, error) {
	m := &Model{Config: cfg, Gen: &GenerationConfig{}, InvFreq: cfg.InvFreq()}
	for i, w := range m.Weights() {
		var buf bytes.Buffer
		if err := writeRandomTensor(&buf, w.Shape, tensor.F32, initStd(w, cfg.InitStd), seed, uint64(i)); err != nil {
			return nil, err
		}
		t, err := tensor.Wrap(tensor.F32, buf.Bytes(), w.Shape...)
		if err != nil {
			return nil, err
		}
		if !t.Aligned() {
			t = t.Convert(tensor.F32)
		}
		*w.Dst = t
	}
	if cfg.TieEmbeddings {
		m.LMHead = m.Embed
	}
	return m, nil
}

// initStd is how a weight is drawn: N(0, std²) for matrices, ones (−1) for norm weights, zeros
// for biases.
func initStd(w Weight, std float64) float64 {
	switch {
	case len(w.Shape) == 2:
		return std
	case strings.HasSuffix(w.Name, ".weight"):
		return -1
	}
	return 0
}

// TrainOptions control Train.
type TrainOptions struct {
	Steps     int     // optimiser steps
	Batch     int     // sequences per step
	SeqLen    int     // longest sequence; longer examples are cut
	LR        float64 // peak learning rate
	Warmup    int     // warmup steps
	Seed      uint64  // batch sampling
	EvalEvery int     // steps between held-out evaluations; 0: only at the end
	Log       io.Writer
	// OnStep is called after every step (for loss curves and checkpoints); an error stops training.
	OnStep func(TrainStep) error
}

// TrainStep is what one step did.
type TrainStep struct {
	Step        int
	Loss        float64
	HeldOut     float64 // mean held-out loss when evaluated at this step, else NaN
	LR          float64
	GradNorm    float64
	Tokens      int     // target tokens in the batch
	TokensPerS  float64 // training throughput of this step
	ElapsedSecs float64
}

// Train fits the F32 weights of r's model to next-token prediction on examples (token sequences,
// each one training sequence) with AdamW, evaluating the loss on heldOut every EvalEvery steps.
func Train(r *Runner, examples, heldOut [][]int32, o TrainOptions) error {
	if len(examples) == 0 {
		return fmt.Errorf("no training examples")
	}
	if o.Steps <= 0 || o.Batch <= 0 || o.SeqLen < 2 || o.LR <= 0 {
		return fmt.Errorf("training needs steps, batch > 0, a sequence length >= 2 and a learning rate > 0 (got %d, %d, %d, %g)", o.Steps, o.Batch, o.SeqLen, o.LR)
	}
	logw := o.Log
	if logw == nil {
		logw = io.Discard
	}
	opt := NewAdamW(o.LR, o.Warmup, o.Steps)
	rng := rand.New(rand.NewPCG(o.Seed, 0x747261696e)) // "train"
	start, lastLog := time.Now(), time.Time{}
	for step := 0; step < o.Steps; step++ {
		picks := make([][]int32, o.Batch)
		for i := range picks {
			picks[i] = examples[rng.IntN(len(examples))]
		}
		b := packBatch(picks, o.SeqLen)
		ce, err := NewCrossEntropy(b, nil)
		if err != nil {
			return err
		}
		t0 := time.Now()
		loss, g, err := r.Gradients(b, ce, GradOptions{Weights: true})
		if err != nil {
			return fmt.Errorf("step %d: %v", step, err)
		}
		norm, rate, err := opt.Step(r.Model, g.Weights)
		if err != nil {
			return err
		}
		st := TrainStep{Step: step, Loss: loss, HeldOut: math.NaN(), LR: rate, GradNorm: norm, Tokens: ce.Targets(),
			TokensPerS: float64(ce.Targets()) / time.Since(t0).Seconds(), ElapsedSecs: time.Since(start).Seconds()}
		if len(heldOut) > 0 && ((o.EvalEvery > 0 && (step+1)%o.EvalEvery == 0) || step == o.Steps-1) {
			if st.HeldOut, err = EvalLoss(r, heldOut, o.SeqLen, o.Batch); err != nil {
				return err
			}
		}
		if time.Since(lastLog) > 2*time.Second || step == o.Steps-1 || !math.IsNaN(st.HeldOut) {
			eta := time.Duration(float64(time.Since(start)) / float64(step+1) * float64(o.Steps-step-1)).Round(time.Second)
			held := ""
			if !math.IsNaN(st.HeldOut) {
				held = fmt.Sprintf(" held-out %.4f", st.HeldOut)
			}
			fmt.Fprintf(logw, "step %d/%d  loss %.4f%s  lr %.2e  |g| %.3f  %.0f tok/s  eta %s\n",
				step+1, o.Steps, loss, held, rate, norm, st.TokensPerS, eta)
			lastLog = time.Now()
		}
		if o.OnStep != nil {
			if err := o.OnStep(st); err != nil {
				return err
			}
		}
	}
	return nil
}

// packBatch lays sequences side by side in one batch, each cut to seqLen, logits at every token.
func packBatch(seqs [][]int32, seqLen int) Batch {
	var b Batch
	for s, toks := range seqs {
		toks = toks[:min(len(toks), seqLen)]
		for p, t := range toks {
			b.Tokens, b.Seq, b.Pos = append(b.Tokens, t), append(b.Seq, int32(s)), append(b.Pos, int32(p))
			b.Logits = append(b.Logits, true)
		}
	}
	return b
}

// EvalLoss is the mean next-token loss over sequences, in batches, without gradients.
func EvalLoss(r *Runner, seqs [][]int32, seqLen, batch int) (float64, error) {
	var total float64
	var n int
	for lo := 0; lo < len(seqs); lo += batch {
		b := packBatch(seqs[lo:min(lo+batch, len(seqs))], seqLen)
		ce, err := NewCrossEntropy(b, nil)
		if err != nil {
			continue // sequences of one token predict nothing
		}
		kv := r.NewKVCache(len(b.Tokens)+16*batch, 16)
		logits, err := r.Forward(b, kv, nil)
		if err != nil {
			return 0, err
		}
		grad := tensor.New(logits.DType, logits.Shape...)
		loss, err := ce.Eval(logits, grad)
		if err != nil {
			return 0, err
		}
		total += loss * float64(ce.Targets())
		n += ce.Targets()
	}
	if n == 0 {
		return 0, fmt.Errorf("held-out set predicts no tokens")
	}
	return total / float64(n), nil
}
