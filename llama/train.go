package llama

import (
	"fmt"
	"math"

	"github.com/tillerlm/tiller/tensor"
)

// Materialize returns a copy of the model whose weights are tensors of dtype dt owned by the copy
// (not the mapped checkpoint), so they can be changed: training updates them in place. A tied
// LM head stays the embedding.
func (m *Model) Materialize(dt tensor.DType) *Model {
	c := *m
	c.Layers = append([]Layer(nil), m.Layers...)
	for _, w := range c.Weights() {
		if *w.Dst != nil {
			*w.Dst = (*w.Dst).Convert(dt)
		}
	}
	if c.Config.TieEmbeddings {
		c.LMHead = c.Embed
	}
	c.files = nil
	return &c
}

// AdamW is the optimiser of training: Adam's moment estimates with decoupled weight decay
// (Loshchilov & Hutter), a linear warmup then a cosine decay of the learning rate to MinLR, and
// clipping of the gradients' global norm.
type AdamW struct {
	LR, MinLR    float64 // peak and final learning rate
	Warmup       int     // steps of linear warmup from 0
	Steps        int     // total steps; the cosine ends here
	Beta1, Beta2 float64
	Eps          float64
	WeightDecay  float64 // applied to matrices only, not to norms, biases or embeddings
	ClipNorm     float64 // global gradient norm bound; 0 is off

	step int
	m, v map[string][]float32 // first and second moments by weight name
}

// NewAdamW returns the optimiser with the usual settings for small language models.
func NewAdamW(lr float64, warmup, steps int) *AdamW {
	return &AdamW{LR: lr, MinLR: lr / 10, Warmup: warmup, Steps: steps, Beta1: 0.9, Beta2: 0.95,
		Eps: 1e-8, WeightDecay: 0.1, ClipNorm: 1, m: map[string][]float32{}, v: map[string][]float32{}}
}

// Rate is the learning rate at step s (0-based).
func (o *AdamW) Rate(s int) float64 {
	if s < o.Warmup {
		return o.LR * float64(s+1) / float64(o.Warmup)
	}
	progress := float64(s-o.Warmup) / float64(max(o.Steps-o.Warmup, 1))
	progress = min(progress, 1)
	return o.MinLR + (o.LR-o.MinLR)*0.5*(1+math.Cos(math.Pi*progress))
}

// Step applies one update to the F32 weights of m from their gradients (same names as
// m.Weights(), F32), and returns the gradients' global norm before clipping and the rate used.
func (o *AdamW) Step(m *Model, grads map[string]*tensor.Tensor) (norm, rate float64, err error) {
	var sq float64
	for _, g := range grads {
		for _, v := range g.F32() {
			sq += float64(v) * float64(v)
		}
	}
	norm = math.Sqrt(sq)
	if math.IsNaN(norm) || math.IsInf(norm, 0) {
		return norm, 0, fmt.Errorf("gradient norm is %g at step %d", norm, o.step)
	}
	scale := 1.0
	if o.ClipNorm > 0 && norm > o.ClipNorm {
		scale = o.ClipNorm / norm
	}
	rate = o.Rate(o.step)
	o.step++
	b1, b2 := o.Beta1, o.Beta2
	c1 := 1 - math.Pow(b1, float64(o.step)) // bias corrections of the moment estimates
	c2 := 1 - math.Pow(b2, float64(o.step))
	for _, w := range m.Weights() {
		g, ok := grads[w.Name]
		if !ok {
			continue
		}
		p := (*w.Dst)
		if p.DType != tensor.F32 || g.DType != tensor.F32 {
			return norm, rate, fmt.Errorf("training needs F32 weights and gradients: %s is %s, its gradient %s", w.Name, p.DType, g.DType)
		}
		mv, vv := o.m[w.Name], o.v[w.Name]
		if mv == nil {
			mv, vv = make([]float32, p.Numel()), make([]float32, p.Numel())
			o.m[w.Name], o.v[w.Name] = mv, vv
		}
		decay := 0.0
		if len(w.Shape) == 2 && w.Name != "model.embed_tokens.weight" && w.Name != "lm_head.weight" {
			decay = o.WeightDecay
		}
		ps, gs := p.F32(), g.F32()
		for i := range ps {
			gi := float64(gs[i]) * scale
			mi := b1*float64(mv[i]) + (1-b1)*gi
			vi := b2*float64(vv[i]) + (1-b2)*gi*gi
			mv[i], vv[i] = float32(mi), float32(vi)
			upd := (mi / c1) / (math.Sqrt(vi/c2) + o.Eps)
			ps[i] = float32(float64(ps[i]) - rate*(upd+decay*float64(ps[i])))
		}
	}
	return norm, rate, nil
}

// CrossEntropy is the mean next-token cross-entropy of a batch of whole sequences whose logits
// were asked for at every token, as a Metric: its value is the loss and its gradient the loss's, so
// the weight gradients Backward returns are the ones to descend.
type CrossEntropy struct {
	lp LogProb
}

// NewCrossEntropy builds the metric for a batch: targets are (row, next token) pairs of the same
// sequence; mask[i] false drops the target predicted at token i.
func NewCrossEntropy(b Batch, mask []bool) (*CrossEntropy, error) {
	var rows []int
	var toks []int32
	for i := 0; i+1 < len(b.Tokens); i++ {
		if b.Seq[i+1] != b.Seq[i] || b.Pos[i+1] != b.Pos[i]+1 {
			continue
		}
		if mask != nil && !mask[i] {
			continue
		}
		rows, toks = append(rows, i), append(toks, b.Tokens[i+1])
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("a training batch with no next-token targets")
	}
	return &CrossEntropy{lp: LogProb{Rows: rows, Tokens: toks}}, nil
}

// Targets is the number of predicted tokens the loss averages over.
func (c *CrossEntropy) Targets() int { return len(c.lp.Rows) }

// Eval writes the gradient of −mean log-probability and returns that loss.
func (c *CrossEntropy) Eval(logits, grad *tensor.Tensor) (float64, error) {
	v, err := c.lp.Eval(logits, grad)
	if err != nil {
		return 0, err
	}
	scale := -1 / float64(len(c.lp.Rows))
	switch grad.DType {
	case tensor.F64:
		for i := range grad.F64() {
			grad.F64()[i] *= scale
		}
	default:
		g := grad.F32()
		for i := range g {
			g[i] *= float32(scale)
		}
	}
	return v * scale, nil
}
