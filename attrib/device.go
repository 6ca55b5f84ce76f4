package attrib

import (
	"fmt"

	"github.com/tillerlm/tiller/hooks"
	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/tensor"
)

// device is what attribution needs of a backend that keeps activations in its own memory (package
// gpu's Backend): hooks on its memory, and the reductions that leave only scores and metric values
// to cross to the host (kernels/attribution.cu).
type device interface {
	hooks.Device
	// AtPScores writes out[j, h] = Σ_{e in node h} (corrupt[krow_j, e] − clean[crow_j, e])·grad[crow_j, e]
	// in F64: out (len(crow), nodes) F64; clean, grad (n, width), corrupt (m, width) F32.
	AtPScores(out, clean, corrupt, grad *tensor.Tensor, crow, krow []int32)
	// AtPQK is AtP*'s QK fix of one layer: qout (n, heads) and kout (n, kv_heads) F64, as qkLayer
	// computes them, from the clean and patched q and k after RoPE and the pattern's gradient dA
	// (n, heads, ctx), over a batch of whole sequences (seq, pos); changed flags the patched tokens.
	AtPQK(qout, kout, qc, kc, qd, kd, dA *tensor.Tensor, changed, seq, pos []int32)
	// MetricLogits returns the values of each row r of logits at cols[r·k … r·k + k − 1] and, when
	// lse is set, each row's log-sum-exp.
	MetricLogits(logits *tensor.Tensor, cols []int32, lse bool) ([]float32, []float64)
	MaxQKContext() int // the longest sequence AtPQK takes
	FreeMemory() int64 // bytes allocations can still get
}

// batchBytes estimates the device memory one batch of pairs takes beyond the weights: the one
// recorded pass that runs the clean prompts and the corrupt ones beside them, with its KV cache,
// and the backward pass (llama.Config.AnalysisBytes over the tokens of both, which counts the
// corrupt rows' share of the backward too: an estimate on the safe side), both runs' captures at
// the scored points, the gradients there and the logit rows; with AtP*, also the pattern
// gradients, a GradDrop pass's gradients beside AtP's, every layer's output gradient kept for
// resuming, and the QK fix's rotated q and k.
func (a *analysis) batchBytes(ins []*Input) int64 {
	c := a.cfg
	clean, corrupt, whole, ctx, rows := 0, 0, 0, 0, 0
	for _, in := range ins {
		n := len(in.Clean) + len(in.Cont)
		k := len(in.Corrupt) + len(in.Cont)
		clean, corrupt, whole = clean+n, corrupt+k-prefix(in), whole+k // whole: with the shared prefix its cache holds
		ctx, rows = max(ctx, n), rows+max(len(in.Cont), 1)
	}
	width := 0
	for _, p := range a.reads {
		width += a.dims.Width(p)
	}
	grads := int64(4 * width * clean)
	bytes := c.AnalysisBytes(clean+whole, 2*len(ins)) + int64(4*width*(clean+corrupt)) + grads + int64(8*rows*c.Vocab)
	if a.opt.Star {
		pattern := int64(4*c.Layers*c.Heads*ctx) * int64(clean)
		bytes += 2*pattern + grads + int64(4*c.Layers*c.Dim*clean) + int64(8*c.Layers*(c.Heads+c.KVHeads)*c.HeadDim*clean) + int64(8*c.Heads*ctx*clean)
	}
	return bytes
}

// checkDevice checks a run's inputs against the device: AtP*'s QK fix takes sequences of at most
// MaxQKContext positions, and batches must fit in memory (fit).
func (a *analysis) checkDevice(inputs []*Input, auto bool) error {
	if a.opt.Star && (a.has(Query) || a.has(Key)) {
		for _, in := range inputs {
			if n := len(in.Clean) + len(in.Cont); n > a.dev.MaxQKContext() {
				return fmt.Errorf("line %d: %d tokens; AtP*'s QK fix on the device takes up to %d (run it on the CPU, or without q and k nodes)", in.Line, n, a.dev.MaxQKContext())
			}
		}
	}
	return a.fit(inputs, auto)
}

// fit checks that batches of a.opt.Batch pairs fit in the device's free memory: when the batch
// size is the default (auto), it shrinks it until the largest batch fits; when it was asked for,
// a batch that does not fit is an error that gives the estimate.
func (a *analysis) fit(inputs []*Input, auto bool) error {
	free := a.dev.FreeMemory()
	need := func(size int) int64 { // the largest batch of this size
		worst := int64(0)
		for lo := 0; lo < len(inputs); lo += size {
			worst = max(worst, a.batchBytes(inputs[lo:min(lo+size, len(inputs))]))
		}
		return worst
	}
	for a.opt.Batch > 1 && auto && need(a.opt.Batch) > free {
		a.opt.Batch--
	}
	if n := need(a.opt.Batch); n > free {
		return fmt.Errorf("attrib: a batch of %d pair(s) needs about %.2f GB of device memory beyond the weights (the record of the clean run, both runs' activations at %d hook points, their gradients%s), and the device has %.2f GB free: use a smaller --batch, fewer --nodes, or shorter prompts",
			a.opt.Batch, float64(n)/1e9, len(a.reads), map[bool]string{true: ", AtP*'s pattern gradients", false: ""}[a.opt.Star], float64(free)/1e9)
	}
	fmt.Fprintf(a.opt.Progress, "attribute: batches of up to %d pairs on the device, about %.2f GB each (%.2f GB free)\n", a.opt.Batch, float64(need(a.opt.Batch))/1e9, float64(free)/1e9)
	return nil
}

// devBatch is one batch of pairs scored on a device: the captured activations of both runs, and
// where each pair's nodes sit in the two batches.
type devBatch struct {
	a              *analysis
	prs            []*pairRun
	cb             llama.Batch
	clean, corrupt *hooks.Set
	// Node rows: every (pair, clean prompt position) with a corrupt counterpart at or after the
	// pair's first difference; its rows in the clean and the corrupt batch.
	at         []nodeRow
	crow, krow []int32
	changed    []int32   // per clean batch row: 1 at a node row (its q and k are patched)
	qk         []*qkRope // AtP*: per layer, q and k after RoPE, clean and patched (made on first use)
}

type nodeRow struct{ pair, pos int }

// qkRope is one layer's clean (qc, kc) and patched (qd, kd) queries and keys after RoPE, in the
// clean batch's rows.
type qkRope struct{ qc, kc, qd, kd *tensor.Tensor }

func (a *analysis) newDevBatch(prs []*pairRun, cb, kb llama.Batch, runs *hooks.Set) *devBatch {
	d := &devBatch{a: a, prs: prs, cb: cb, clean: runs, corrupt: runs, changed: make([]int32, len(cb.Tokens))}
	crows, krows := batchRows(cb), batchRows(kb)
	for k := range krows { // the corrupt prompts' rows follow the clean prompts' in the pass
		krows[k] += int32(len(cb.Tokens))
	}
	for i, pr := range prs {
		for q := pr.first; q < len(pr.in.Clean); q++ {
			src := q - pr.in.Shift
			if src < 0 || src >= len(pr.in.Corrupt) {
				continue
			}
			c := crows[[2]int32{int32(i), int32(q)}]
			d.at = append(d.at, nodeRow{i, q})
			d.crow, d.krow = append(d.crow, c), append(d.krow, krows[[2]int32{pr.kseq, int32(src)}])
			d.changed[c] = 1
		}
	}
	return d
}

// batchRows maps (sequence, position) to the batch row that holds it.
func batchRows(b llama.Batch) map[[2]int32]int32 {
	m := make(map[[2]int32]int32, len(b.Tokens))
	for i := range b.Tokens {
		m[[2]int32{b.Seq[i], b.Pos[i]}] = int32(i)
	}
	return m
}

// captured is a set's one whole-batch activation at p, as (n, width).
func (d *devBatch) captured(s *hooks.Set, p hooks.Point) *tensor.Tensor {
	c := s.Captured[p]
	if len(c) != 1 {
		panic(fmt.Sprintf("attrib: %d captures of %s", len(c), p.Name()))
	}
	return flat(c[0].X)
}

func flat(t *tensor.Tensor) *tensor.Tensor { return t.Reshape(t.Shape[0], t.Numel()/t.Shape[0]) }

// scores is every pair's AtP scores from a pass's whole-batch gradients: one reduction per point
// on the device into one buffer, one download.
func (d *devBatch) scores(grads map[hooks.Point]*tensor.Tensor) []Scores {
	a, dev := d.a, d.a.dev
	out := make([]Scores, len(d.prs))
	for i, pr := range d.prs {
		out[i] = a.newScores(len(pr.in.Clean))
	}
	if len(d.at) == 0 {
		return out
	}
	total := 0
	for _, p := range a.reads {
		total += len(d.at) * a.dims.Width(p) / a.chunk(p)
	}
	buf := dev.Alloc(tensor.F64, total, 1)
	defer dev.Free(buf)
	off := 0
	for _, p := range a.reads {
		nodes := a.dims.Width(p) / a.chunk(p)
		o := buf.Slice(off, off+len(d.at)*nodes).Reshape(len(d.at), nodes)
		dev.AtPScores(o, d.captured(d.clean, p).Slice(0, len(d.cb.Tokens)), d.captured(d.corrupt, p), flat(grads[p]), d.crow, d.krow)
		off += len(d.at) * nodes
	}
	host := tensor.New(tensor.F64, total, 1)
	dev.Download(host, buf)
	v := host.F64()
	off = 0
	for _, p := range a.reads {
		nodes := a.dims.Width(p) / a.chunk(p)
		for j, at := range d.at {
			for h := 0; h < nodes; h++ {
				setScore(out[at.pair], p, at.pos, h, v[off+j*nodes+h])
			}
		}
		off += len(d.at) * nodes
	}
	return out
}

// rope returns layer l's q and k after RoPE at the clean positions, clean and with the node rows
// patched from the corrupt run (as qkLayer forms them: the corrupt pre-RoPE activation rotated at
// the clean position).
func (d *devBatch) rope(l int) *qkRope {
	for len(d.qk) <= l {
		d.qk = append(d.qk, nil)
	}
	if d.qk[l] != nil {
		return d.qk[l]
	}
	dev, r := d.a.dev, d.a.r
	prep := func(kind hooks.Kind, patched bool) *tensor.Tensor {
		p := hooks.Point{Layer: l, Kind: kind}
		src := d.clean.Captured[p][0].X.Slice(0, len(d.cb.Tokens)) // the clean prompts' rows
		x := dev.Alloc(src.DType, src.Shape...)
		dev.Copy(x, src)
		if patched {
			dev.PatchRows(flat(x), d.captured(d.corrupt, p), d.crow, d.krow, 0, x.Numel()/x.Shape[0])
		}
		dev.RoPE(x, d.cb.Pos, r.Model.InvFreq)
		return x
	}
	d.qk[l] = &qkRope{prep(hooks.Q, false), prep(hooks.K, false), prep(hooks.Q, true), prep(hooks.K, true)}
	return d.qk[l]
}

// qkFixed is base with the q and k nodes rescored by AtP*'s QK fix on the device, from a pass's
// pattern gradients: every layer's fix into one buffer, one download; qkLayer's rules for which
// nodes change.
func (d *devBatch) qkFixed(base []Scores, grads map[hooks.Point]*tensor.Tensor) []Scores {
	dev, c := d.a.dev, d.a.cfg
	out := make([]Scores, len(base))
	for i, s := range base {
		for k, g := range s {
			if g != nil {
				cp := *g
				cp.Data = append([]float64(nil), g.Data...)
				out[i][k] = &cp
			}
		}
	}
	if out[0][Query] == nil && out[0][Key] == nil {
		return out
	}
	n := len(d.cb.Tokens)
	per := n * (c.Heads + c.KVHeads)
	buf := dev.Alloc(tensor.F64, c.Layers*per, 1)
	defer dev.Free(buf)
	for l := 0; l < c.Layers; l++ {
		qr := d.rope(l)
		qout := buf.Slice(l*per, l*per+n*c.Heads).Reshape(n, c.Heads)
		kout := buf.Slice(l*per+n*c.Heads, (l+1)*per).Reshape(n, c.KVHeads)
		dev.AtPQK(qout, kout, qr.qc, qr.kc, qr.qd, qr.kd, grads[hooks.Point{Layer: l, Kind: hooks.Pattern}], d.changed, d.cb.Seq, d.cb.Pos)
	}
	host := tensor.New(tensor.F64, c.Layers*per, 1)
	dev.Download(host, buf)
	v := host.F64()
	rows := batchRows(d.cb)
	for l := 0; l < c.Layers; l++ {
		for i, pr := range d.prs {
			np := len(pr.in.Clean)
			for q := 0; q < np; q++ {
				row := int(rows[[2]int32{int32(i), int32(q)}])
				if out[i][Query] != nil && d.changed[row] == 1 {
					for h := 0; h < c.Heads; h++ {
						out[i][Query].Set(Node{Kind: Query, Layer: l, Head: h, Pos: q}, v[l*per+row*c.Heads+h])
					}
				}
				if out[i][Key] != nil {
					for g := 0; g < c.KVHeads; g++ {
						out[i][Key].Set(Node{Kind: Key, Layer: l, Head: g, Pos: q}, v[l*per+n*c.Heads+row*c.KVHeads+g])
					}
				}
			}
		}
	}
	return out
}

// release gives back the device memory the batch made.
func (d *devBatch) release() {
	for _, q := range d.qk {
		if q != nil {
			for _, t := range []*tensor.Tensor{q.qc, q.kc, q.qd, q.kd} {
				d.a.dev.Free(t)
			}
		}
	}
	d.qk = nil
}
