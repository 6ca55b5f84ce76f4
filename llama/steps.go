package llama

import (
	"github.com/tillerlm/tiller/hooks"
	"github.com/tillerlm/tiller/tensor"
)

// DecodeBackend is a backend that runs whole decode steps of a model on its own (package gpu:
// the fused kernels of a step, recorded once per step shape as a CUDA graph and replayed), so
// that every caller of the runner — Generate, GenerateBatch, the serving engine — decodes at the
// speed of its fastest path. The runner hands it the passes a decode step can be (see
// Runner.stepped) and runs every other pass op by op.
type DecodeBackend interface {
	// NewDecodeSteps prepares decode steps of m, whose weights are in the backend's memory. It
	// returns nil and no error when the backend has no fast path for this model.
	NewDecodeSteps(m *Model) (DecodeSteps, error)
}

// DecodeSteps runs the decode steps of one model.
type DecodeSteps interface {
	// MaxRows is the most tokens one step takes.
	MaxRows() int
	// Step runs the forward pass of b — one token of each of its distinct sequences, each at the
	// position after the last one its sequence holds in kv (reserved there), logits at every
	// row — writing the tokens' keys and values into kv, with the additions of steer, and returns
	// the logits (rows, vocab) F32 in the backend's memory, valid until the next call. Steer holds
	// every hook point the pass adds to, in forward order, each one of StepPoints' kinds.
	Step(b Batch, kv *tensor.KVCache, steer []PointTerms) (*tensor.Tensor, error)
}

// PointTerms is what a decode step adds at one hook point: row i gets Σ_t Alpha_t[i]·Vector_t.
type PointTerms struct {
	Point hooks.Point
	Terms []hooks.Term
}

// StepPoints reports whether a decode step may add at points of kind k: the residual stream
// (hook_embed, resid_pre, resid_mid, resid_post) and the two outputs added to it (attn_out,
// mlp_out), where an addition folds into the launch that adds to the stream. Additions elsewhere,
// and every read or patch, run op by op.
func StepPoints(k hooks.Kind) bool {
	switch k {
	case hooks.Embed, hooks.ResidPre, hooks.AttnOut, hooks.ResidMid, hooks.MLPOut, hooks.ResidPost:
		return true
	}
	return false
}

// stepped runs b as a decode step of the backend's DecodeSteps when it can be one: a backend
// with decode steps for the model, no recording, at most MaxRows tokens of distinct sequences,
// logits at every token, and a hook set that only adds, at StepPoints. ok is false when the pass
// must run op by op.
func (r *Runner) stepped(b Batch, kv *tensor.KVCache, h *hooks.Set, rec *Record) (logits *tensor.Tensor, ok bool, err error) {
	if rec != nil || r.stepsOff {
		return nil, false, nil
	}
	if r.steps == nil {
		db, isDB := r.Backend.(DecodeBackend)
		if !isDB {
			r.stepsOff = true
			return nil, false, nil
		}
		s, err := db.NewDecodeSteps(r.Model)
		if err != nil {
			return nil, false, err
		}
		if s == nil {
			r.stepsOff = true
			return nil, false, nil
		}
		r.steps = s
	}
	n := len(b.Tokens)
	if n > r.steps.MaxRows() {
		return nil, false, nil
	}
	for i := range b.Tokens {
		if b.Logits != nil && !b.Logits[i] || b.Logits == nil && n > 1 {
			return nil, false, nil
		}
	}
	if n > 1 {
		r.seen = r.seen[:0]
		for _, s := range b.Seq {
			for _, t := range r.seen {
				if t == s {
					return nil, false, nil
				}
			}
			r.seen = append(r.seen, s)
		}
	}
	r.stepPoints = h.ActivePoints(r.stepPoints[:0])
	for _, p := range r.stepPoints {
		if !StepPoints(p.Kind) || !h.Additive(p) {
			return nil, false, nil
		}
	}
	for len(r.stepTerms) < len(r.stepPoints) {
		r.stepTerms = append(r.stepTerms, PointTerms{})
	}
	steer := r.stepTerms[:len(r.stepPoints)]
	for i, p := range r.stepPoints {
		steer[i].Point = p
		steer[i].Terms = h.Terms(steer[i].Terms, p, b.Seq, b.Pos)
	}
	logits, err = r.steps.Step(b, kv, steer)
	return logits, err == nil, err
}
