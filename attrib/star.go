package attrib

import (
	"fmt"
	"math"

	"github.com/tillerlm/tiller/hooks"
	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/tensor"
)

// AtP* (Kramár, Lieberum, Shah, Nanda 2024) fixes two sources of false negatives in AtP.
//
// The QK fix. A query or key moves the output only through the attention softmax, which AtP
// linearises. Where the softmax saturates (one key takes nearly all the weight) its gradient
// vanishes, and AtP scores a query or key that would swing the attention to another key as
// harmless. The fix computes the patched attention probabilities exactly and linearises only what
// comes after them:
//
//	ĉ*(q node at position p of head h) = Σ_t (A'[h,p,t] − A[h,p,t]) · ∂M/∂A[h,p,t],
//
// with A' the softmax of q'_p·k_t/√D (q' the corrupt query, RoPE applied at the clean position);
// for a key node at position t of kv head g, every query p ≥ t of every head h that reads g sees
// one logit change, q_p·(k'_t − k_t)/√D, and the row's new softmax enters the same sum.
//
// GradDrop. A node's direct and indirect effects can cancel in the gradient although each path
// is large. GradDrop reruns the backward pass once per layer ℓ with the gradient through layer
// ℓ's residual contributions (its attention and MLP outputs) set to zero (from layer ℓ down: above
// it the pass is AtP's, whose gradients it resumes from), and scores
//
//	ĉ_GradDrop(n) = 1/(L−1) · Σ_ℓ |ĉ_ℓ(n)|,
//
// a magnitude: without cancellation it equals |ĉ(n)| (a node's own layer contributes 0 and the
// other L−1 estimates agree), with cancellation it is larger.

// qkFixed returns the pair's AtP* scores: atp's grids with the q and k nodes rescored by the QK fix,
// using the pattern gradients in grads.
func (a *analysis) qkFixed(pr *pairRun, atp Scores, grads *hooks.Cache) Scores {
	var s Scores
	for k, g := range atp {
		if g != nil {
			c := *g
			c.Data = append([]float64(nil), g.Data...)
			s[k] = &c
		}
	}
	if s[Query] == nil && s[Key] == nil {
		return s
	}
	for l := 0; l < a.cfg.Layers; l++ {
		a.qkLayer(pr, l, grads, s)
	}
	return s
}

// qkLayer rescores layer l's q and k nodes of one pair.
func (a *analysis) qkLayer(pr *pairRun, l int, grads *hooks.Cache, s Scores) {
	c := a.cfg
	n, np, dh := pr.n, len(pr.in.Clean), c.HeadDim
	heads, kvHeads, group := c.Heads, c.KVHeads, c.Heads/c.KVHeads
	qp, kp := hooks.Point{Layer: l, Kind: hooks.Q}, hooks.Point{Layer: l, Kind: hooks.K}
	qc := a.rope(act(pr.clean, pr.seq, qp), n, heads)
	kc := a.rope(act(pr.clean, pr.seq, kp), n, kvHeads)
	qd := a.rope(add(act(pr.clean, pr.seq, qp), pr.delta(qp, heads*dh)), n, heads)
	kd := a.rope(add(act(pr.clean, pr.seq, kp), pr.delta(kp, kvHeads*dh)), n, kvHeads)
	dpat, _ := grads.Get(pr.seq, hooks.Point{Layer: l, Kind: hooks.Pattern}.Name())
	dA, stride := dpat.ToF64(), dpat.Shape[1] // (heads, ctx, ctx), ctx >= n: the batch's longest run
	scale := 1 / math.Sqrt(float64(dh))
	vec := func(x []float64, nh, pos, h int) []float64 { return x[(pos*nh+h)*dh : (pos*nh+h+1)*dh] }
	changed := func(p int) bool {
		q := p - pr.in.Shift
		return p >= pr.first && p < np && q >= 0 && q < len(pr.in.Corrupt)
	}

	keyEst := make([]float64, kvHeads*np)
	logits, e := make([]float64, n), make([]float64, n)
	pre, preW := make([]float64, n+1), make([]float64, n+1)
	for h := 0; h < heads; h++ {
		g := h / group
		for p := pr.first; p < n; p++ { // earlier rows hold no changed query or key
			row := dA[(h*stride+p)*stride:]
			// Clean logits and probabilities of query p: s_t = q_p·k_t/√D, t <= p.
			qv := vec(qc, heads, p, h)
			m := math.Inf(-1)
			for t := 0; t <= p; t++ {
				logits[t] = dot(qv, vec(kc, kvHeads, t, g)) * scale
				m = math.Max(m, logits[t])
			}
			var z, sw float64
			for t := 0; t <= p; t++ {
				e[t] = math.Exp(logits[t] - m)
				z += e[t]
				sw += e[t] * row[t]
			}
			base := sw / z // Σ_t A_t ∂M/∂A_t

			// Query node (h, p): the whole row's softmax with the corrupt query.
			if s[Query] != nil && changed(p) {
				qv2 := vec(qd, heads, p, h)
				m2 := math.Inf(-1)
				for t := 0; t <= p; t++ {
					e[t] = dot(qv2, vec(kc, kvHeads, t, g)) * scale
					m2 = math.Max(m2, e[t])
				}
				var z2, sw2 float64
				for t := 0; t <= p; t++ {
					x := math.Exp(e[t] - m2)
					z2 += x
					sw2 += x * row[t]
				}
				s[Query].Set(Node{Kind: Query, Layer: l, Head: h, Pos: p}, sw2/z2-base)
				for t := 0; t <= p; t++ { // restore the clean exponentials for the key nodes
					e[t] = math.Exp(logits[t] - m)
				}
			}

			// Key nodes (g, t): one logit of this row changes. Sums of the other terms come from
			// prefix and suffix sums, so that a dominant key never cancels against the total.
			if s[Key] == nil {
				continue
			}
			pre[0], preW[0] = 0, 0
			for t := 0; t <= p; t++ {
				pre[t+1], preW[t+1] = pre[t]+e[t], preW[t]+e[t]*row[t]
			}
			var suf, sufW float64
			for t := p; t >= 0; t-- {
				if changed(t) {
					d := dot(qv, vec(kd, kvHeads, t, g))*scale - logits[t]
					st := logits[t] + d
					m2 := math.Max(m, st)
					others, othersW := (pre[t]+suf)*math.Exp(m-m2), (preW[t]+sufW)*math.Exp(m-m2)
					et := math.Exp(st - m2)
					z2 := others + et
					keyEst[g*np+t] += (et*row[t]+othersW)/z2 - base
				}
				suf += e[t]
				sufW += e[t] * row[t]
			}
		}
	}
	if s[Key] != nil {
		for g := 0; g < kvHeads; g++ {
			for t := 0; t < np; t++ {
				s[Key].Set(Node{Kind: Key, Layer: l, Head: g, Pos: t}, keyEst[g*np+t])
			}
		}
	}
}

// rope applies the model's rotary embedding to x, (n, heads, D) at positions 0…n−1, in F64.
func (a *analysis) rope(x []float64, n, heads int) []float64 {
	t := tensor.FromF64(x, n, heads, a.cfg.HeadDim)
	pos := make([]int32, n)
	for i := range pos {
		pos[i] = int32(i)
	}
	a.r.Backend.RoPE(t, pos, a.r.Model.InvFreq)
	return t.F64()
}

func add(x, d []float64) []float64 {
	for i := range x {
		x[i] += d[i]
	}
	return x
}

// gradDrop reruns the backward pass once per layer with that layer dropped (grads resuming from
// AtP's pass) and accumulates the GradDrop magnitude of every node of every pair of the batch, from
// each pass's AtP* estimates.
func (a *analysis) gradDrop(rec *llama.Record, dlogits *tensor.Tensor, grads llama.GradOptions, estimate func(*llama.Grads) []Scores, out []*PairResult) error {
	L := a.cfg.Layers
	for i := range out {
		var s Scores
		for k, g := range out[i].Scores[AtP] {
			if g != nil {
				s[k] = NewGrid(g.Kind, g.Layers, g.Heads, g.Positions)
			}
		}
		out[i].Scores[GradDrop] = s
	}
	for l := 0; l < L; l++ {
		grads.DropLayers = []int{l}
		g, err := a.r.Backward(rec, dlogits, grads)
		if err != nil {
			return err
		}
		if L > 4 {
			fmt.Fprintf(a.opt.Progress, "attribute: GradDrop: backward pass %d/%d of the batch\n", l+1, L)
		}
		for i, est := range estimate(g) {
			for k, gd := range out[i].Scores[GradDrop] {
				if gd == nil {
					continue
				}
				for j, v := range est[k].Data {
					gd.Data[j] += math.Abs(v)
				}
			}
		}
		g.Release()
	}
	norm := float64(max(L-1, 1))
	for i := range out {
		for _, gd := range out[i].Scores[GradDrop] {
			if gd != nil {
				for j := range gd.Data {
					gd.Data[j] /= norm
				}
			}
		}
	}
	return nil
}
