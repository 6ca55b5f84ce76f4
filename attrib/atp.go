package attrib

import (
	"fmt"
	"io"
	"math"
	"sync"
	"time"

	"github.com/tillerlm/tiller/hooks"
	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/tensor"
)

// Options control Run.
type Options struct {
	Kinds []Kind // node kinds to score; nil: DefaultKinds, plus Query and Key with Star
	// Star adds AtP*'s two fixes (Kramár et al. 2024): for q and k nodes the attention softmax is
	// recomputed with the patched query or key and only the step after it is linearised (the QK
	// fix), and every node gets a GradDrop magnitude from one extra backward pass per layer.
	Star bool
	// Batch is the number of pairs run together (sequences of one forward batch); default 8.
	Batch int
	// Verify is how many nodes exact activation patching checks: 0 none, VerifyAll every node, or
	// N > 0 for N nodes of the averaged grids: the N/2 with the largest |AtP| and the rest drawn
	// at random (seeded by Seed).
	Verify int
	Seed   uint64
	// ExactTokens is about how many tokens one batch of patched runs holds; default 2048.
	ExactTokens int
	Progress    io.Writer // progress lines (nil: none)
}

// VerifyAll asks exact patching for every node.
const VerifyAll = -1

// PairResult is one pair's metric values and scores, on its own clean prompt positions.
type PairResult struct {
	Input          *Input
	Clean, Corrupt float64            // the metric on the clean and on the corrupt run
	Scores         [numMethods]Scores // by method and kind; nil where not computed
}

// Result is what Run found.
type Result struct {
	Kinds                  []Kind
	Layers, Heads, KVHeads int
	Star                   bool
	Pairs                  []*PairResult
	// Width is the number of columns of the averaged grids: the longest clean prompt. Pairs are
	// aligned at their ends, so column c is Width−1−c tokens before each prompt's last token.
	Width  int
	Labels []string // per column: the clean token when every pair has the same one there, else "−e"
	// Clean and Corrupt are the metric averaged over pairs; Mean the scores averaged over pairs
	// (a pair adds nothing to columns before its first token).
	Clean, Corrupt float64
	Mean           [numMethods]Scores
	Verified       *Verification // nil without exact patching
	Timing         Timing
}

// Timing is where Run's time went.
type Timing struct {
	// Forward is the recorded forward passes of the clean prompts with the corrupt ones in the same
	// batch (from their first difference), reading the nodes, and the metrics.
	Forward  time.Duration
	Backward time.Duration // backward passes to the nodes at and after the first difference
	Score    time.Duration // products of differences and gradients
	Star     time.Duration // AtP*: QK fix and GradDrop's extra backward passes
	Exact    time.Duration // activation patching
	Patched  int           // patched forward passes run (pairs × nodes)
}

// AtP is the time attribution patching proper took: the forward pass, the backward and the products.
func (t Timing) AtP() time.Duration { return t.Forward + t.Backward + t.Score }

// analysis is one Run's state.
type analysis struct {
	r     *llama.Runner
	opt   Options
	cfg   *llama.Config
	dims  hooks.Dims
	kinds []Kind
	res   *Result
	// reads are the hook points both forward passes capture; grads those the backward returns.
	reads, grads []hooks.Point
	dev          device // the runner's backend when it keeps activations in its own memory, else nil
}

// Run scores every node of the chosen kinds on each pair with AtP (and AtP* when asked), averages
// over pairs, and checks against exact activation patching when asked. The runner's backend must
// have a backward pass; its activation dtype (F32, or F64 for exact analysis on the CPU) is used
// throughout. On a device (a GPU backend in analysis precision) activations, gradients and patched
// runs stay in its memory, and only scores and metric values come back.
func Run(r *llama.Runner, inputs []*Input, opt Options) (*Result, error) {
	if len(inputs) == 0 {
		return nil, fmt.Errorf("attrib: no pairs")
	}
	auto := opt.Batch <= 0
	if auto {
		opt.Batch = 8
	}
	if opt.ExactTokens <= 0 {
		opt.ExactTokens = 2048
	}
	if opt.Progress == nil {
		opt.Progress = io.Discard
	}
	cfg := r.Model.Config
	a := &analysis{r: r, opt: opt, cfg: cfg, dims: cfg.HookDims(), kinds: opt.Kinds}
	if r.OnDevice() {
		d, ok := r.Backend.(device)
		if !ok {
			return nil, fmt.Errorf("attrib: this backend keeps activations in its own memory but cannot reduce attribution scores there")
		}
		a.dev = d
	}
	if a.kinds == nil {
		a.kinds = append([]Kind(nil), DefaultKinds...)
		if opt.Star {
			a.kinds = append(a.kinds, Query, Key)
		}
	}
	a.res = &Result{Kinds: a.kinds, Layers: cfg.Layers, Heads: cfg.Heads, KVHeads: cfg.KVHeads, Star: opt.Star}
	seen := map[hooks.Point]bool{}
	for l := 0; l < cfg.Layers; l++ {
		for _, k := range a.kinds {
			if p := k.Point(l); !seen[p] {
				seen[p] = true
				a.reads = append(a.reads, p)
			}
		}
	}
	a.grads = append([]hooks.Point(nil), a.reads...)
	if opt.Star && (a.has(Query) || a.has(Key)) { // the QK fix needs ∂M/∂pattern
		for l := 0; l < cfg.Layers; l++ {
			a.grads = append(a.grads, hooks.Point{Layer: l, Kind: hooks.Pattern})
		}
	}

	if a.dev != nil {
		if err := a.checkDevice(inputs, auto); err != nil {
			return nil, err
		}
	}
	start := time.Now()
	for lo := 0; lo < len(inputs); lo += a.opt.Batch {
		hi := min(lo+a.opt.Batch, len(inputs))
		prs, err := a.batch(inputs[lo:hi])
		if err != nil {
			return nil, err
		}
		a.res.Pairs = append(a.res.Pairs, prs...)
		fmt.Fprintf(opt.Progress, "attribute: %d/%d pairs scored (%.2f s per pair)\n", hi, len(inputs), time.Since(start).Seconds()/float64(hi))
	}
	a.average()
	if opt.Verify != 0 {
		if err := a.verify(); err != nil {
			return nil, err
		}
	}
	return a.res, nil
}

func (a *analysis) has(k Kind) bool {
	for _, x := range a.kinds {
		if x == k {
			return true
		}
	}
	return false
}

// readSet is a hook set that reads the activations at every point of a.reads: into its host
// cache, or, on a device, captured there as whole batches.
func (a *analysis) readSet() *hooks.Set {
	return a.readSetOf(a.reads)
}

// readSetOf is readSet for the given points.
func (a *analysis) readSetOf(ps []hooks.Point) *hooks.Set {
	h := hooks.NewSet(a.dims)
	if a.dev != nil {
		h.CapturePoints(ps)
		return h
	}
	h.Cache = a.cache()
	h.ReadPoints(ps)
	return h
}

// hostCaches are the host caches of activations and gradients that earlier batches gave back,
// emptied with their memory kept (hooks.Cache.Recycle): a batch's reads are tens of MB (35 MB for
// a pair of 64-token prompts on SmolLM2-135M, and half that again in gradients), fresh memory
// costs page faults and zeroing, and the garbage collector may still take them back between runs.
var hostCaches sync.Pool

// cache is a host cache for a batch's activations or gradients, recycled when there is one.
func (a *analysis) cache() *hooks.Cache {
	if c, ok := hostCaches.Get().(*hooks.Cache); ok {
		return c
	}
	return hooks.NewCache()
}

// recycle gives a cache of cache's back once the batch is done with it.
func (a *analysis) recycle(c *hooks.Cache) {
	c.Recycle()
	hostCaches.Put(c)
}

// release gives back the memory a hook set holds: to the device, or on the CPU its cache to the
// next batch.
func (a *analysis) release(h *hooks.Set) {
	if a.dev != nil {
		h.Release(a.dev)
		return
	}
	a.recycle(h.Cache)
}

// run is one prompt of a batch: its tokens, and which logit rows the metric reads.
type run struct {
	tokens  []int32 // the prompt, then the continuation
	seq     int32   // its sequence id in the batch
	row, nr int     // the run's first logit row in the batch's logits, and how many
}

// runs lays out each input's clean (or corrupt) prompt, with its continuation, as one sequence of
// a batch, asking for logits at the rows its metric reads. The corrupt runs start at their
// prefix's end (see prefix), where the clean run's keys and values hand over.
func runs(ins []*Input, clean bool) ([]run, llama.Batch) {
	var b llama.Batch
	out := make([]run, len(ins))
	row := 0
	for i, in := range ins {
		p, from := in.Clean, 0
		if !clean {
			p, from = in.Corrupt, prefix(in)
		}
		toks := append(append([]int32(nil), p...), in.Cont...)
		nr := max(len(in.Cont), 1)
		out[i] = run{tokens: toks, seq: int32(i), row: row, nr: nr}
		row += nr
		appendRun(&b, int32(i), toks, from, len(p)-1, nr)
	}
	return out, b
}

// appendRun adds a sequence's tokens from position from on to the batch, with logits at rows
// [first, first+n).
func appendRun(b *llama.Batch, seq int32, toks []int32, from, first, n int) {
	for k := from; k < len(toks); k++ {
		b.Tokens = append(b.Tokens, toks[k])
		b.Seq = append(b.Seq, seq)
		b.Pos = append(b.Pos, int32(k))
		b.Logits = append(b.Logits, k >= first && k < first+n)
	}
}

// firstDiff is the first clean prompt position whose activations can differ from the corrupt
// run's. Before it both runs have the same tokens at the same positions, so (attention being
// causal) the same activations: every node there has no effect, AtP needs no gradient there,
// and the corrupt run need not compute it. Prompts of different lengths aligned at the right share
// no position; the first with a counterpart is max(Shift, 0).
func firstDiff(in *Input) int {
	if in.Shift != 0 {
		return max(in.Shift, 0)
	}
	for q := range in.Clean {
		if in.Clean[q] != in.Corrupt[q] {
			return q
		}
	}
	return len(in.Clean)
}

// prefix is how many leading positions the corrupt run takes from the clean run rather than
// computing: those before the first difference of prompts of the same length, but never the last
// prompt token, whose logits the metric reads.
func prefix(in *Input) int {
	if in.Shift != 0 {
		return 0
	}
	return min(firstDiff(in), len(in.Corrupt)-1)
}

// metric evaluates an input's metric on its rows of a batch's logits, writing its gradient into
// the same rows of grad; value computes the value alone.
func metric(in *Input, ru run, logits, grad *tensor.Tensor) (float64, error) {
	lg, g := logits.Slice(ru.row, ru.row+ru.nr), grad.Slice(ru.row, ru.row+ru.nr)
	var m llama.Metric
	if in.Cont == nil {
		m = llama.LogitDiff{Row: 0, A: in.A, B: in.B}
	} else {
		rows := make([]int, len(in.Cont))
		for k := range rows {
			rows[k] = k
		}
		m = llama.LogProb{Rows: rows, Tokens: in.Cont}
	}
	return m.Eval(lg, g)
}

// value is metric without the gradient, for the runs that need only the value (the corrupt run
// and every patched run): one pass of exponentials over the vocabulary per continuation token.
func value(in *Input, ru run, logits *tensor.Tensor) float64 {
	vocab := logits.Cols()
	row := func(r int) []float64 {
		lg := logits.Slice(ru.row+r, ru.row+r+1)
		if lg.DType == tensor.F64 {
			return lg.F64()
		}
		out := make([]float64, vocab)
		for j, v := range lg.F32() {
			out[j] = float64(v)
		}
		return out
	}
	if in.Cont == nil {
		x := row(0)
		return x[in.A] - x[in.B]
	}
	total := 0.0
	for k, t := range in.Cont {
		x := row(k)
		m := math.Inf(-1)
		for _, v := range x {
			m = max(m, v)
		}
		z := 0.0
		for _, v := range x {
			z += math.Exp(v - m)
		}
		total += x[t] - m - math.Log(z)
	}
	return total
}

// pairRun is what one pair's scoring reads: its runs' activations and gradients, by sequence.
type pairRun struct {
	in                    *Input
	seq, kseq             int32        // the clean run's sequence, and the corrupt run's
	n                     int          // tokens of the clean run, continuation included
	first                 int          // firstDiff: nodes before it score 0
	clean, corrupt, grads *hooks.Cache // activations of both runs and the clean run's gradients
}

// batch runs AtP (and AtP*) on a batch of pairs: the clean prompts forward, recorded, reading the
// nodes; the metric; the corrupt prompts forward from where they first differ, reading the nodes;
// the backward pass to the nodes at and after the first difference; then each node's score.
func (a *analysis) batch(ins []*Input) ([]*PairResult, error) {
	r := a.r
	out := make([]*PairResult, len(ins))
	from := map[int32]int32{}
	for i, in := range ins {
		out[i] = &PairResult{Input: in}
		from[int32(i)] = int32(firstDiff(in))
	}

	t0 := time.Now()
	cruns, cb := runs(ins, true)
	kruns, kb := runs(ins, false)
	// Both prompts of every pair run in one recorded pass, one read of the weights for both: the
	// corrupt prompts as sequences len(ins)+i, unrecorded, from the end of the prefix they share
	// with their clean prompt; the read set keeps each run's activations under its own id.
	clean := a.readSet()
	defer a.release(clean)
	corrupt := clean
	shared := map[int32]llama.Shared{}
	for i, in := range ins {
		shared[int32(len(ins)+i)] = llama.Shared{Seq: int32(i), N: int32(prefix(in))}
	}
	for i := range kb.Seq {
		kb.Seq[i] += int32(len(ins))
	}
	rec, logits, err := r.RecordAlong(cb, clean, kb, shared)
	if err != nil {
		return nil, err
	}
	defer rec.Release()
	rows := 0
	for _, ru := range cruns {
		rows += ru.nr
	}
	dlogits := tensor.New(logits.DType, rows, logits.Cols())
	for i, in := range ins {
		if out[i].Clean, err = metric(in, cruns[i], logits, dlogits); err != nil {
			return nil, fmt.Errorf("line %d: %v", in.Line, err)
		}
		kruns[i].row += rows
		kruns[i].seq += int32(len(ins))
		out[i].Corrupt = value(in, kruns[i], logits)
	}
	t2 := time.Now()
	a.res.Timing.Forward += t2.Sub(t0)

	grads := llama.GradOptions{Points: a.grads, From: from, Resumable: a.opt.Star, Batched: a.dev != nil}
	if a.dev == nil {
		grads.Into = a.cache()
		defer a.recycle(grads.Into)
	}
	g, err := r.Backward(rec, dlogits, grads)
	if err != nil {
		return nil, err
	}
	defer g.Release()
	t3 := time.Now()
	a.res.Timing.Backward += t3.Sub(t2)

	prs := make([]*pairRun, len(ins))
	for i, in := range ins {
		prs[i] = &pairRun{in: in, seq: int32(i), kseq: kruns[i].seq, n: len(cruns[i].tokens), first: firstDiff(in), clean: clean.Cache, corrupt: corrupt.Cache, grads: g.Points}
	}
	// score gives every pair's AtP scores from the gradients of one backward pass; fix rescores
	// the q and k nodes of base with AtP*'s QK fix.
	score := func(g *llama.Grads) []Scores {
		est := make([]Scores, len(prs))
		for i, pr := range prs {
			est[i] = a.score(pr, g.Points)
		}
		return est
	}
	fix := func(base []Scores, g *llama.Grads) []Scores {
		est := make([]Scores, len(prs))
		for i, pr := range prs {
			est[i] = a.qkFixed(pr, base[i], g.Points)
		}
		return est
	}
	if a.dev != nil {
		d := a.newDevBatch(prs, cb, kb, clean)
		defer d.release()
		score = func(g *llama.Grads) []Scores { return d.scores(g.Batch) }
		fix = func(base []Scores, g *llama.Grads) []Scores { return d.qkFixed(base, g.Batch) }
	}
	atp := score(g)
	for i, s := range atp {
		out[i].Scores[AtP] = s
	}
	t4 := time.Now()
	a.res.Timing.Score += t4.Sub(t3)

	if a.opt.Star {
		for i, s := range fix(atp, g) {
			out[i].Scores[AtPStar] = s
		}
		grads.Resumable, grads.Resume, grads.Into = false, g, nil // GradDrop's passes share g's points
		estimate := func(g *llama.Grads) []Scores { return fix(score(g), g) }
		if err := a.gradDrop(rec, dlogits, grads, estimate, out); err != nil {
			return nil, err
		}
		a.res.Timing.Star += time.Since(t4)
	}
	return out, nil
}

// act returns a run's activation at point p as float64, (n, width) with width = dims.Width(p).
func act(c *hooks.Cache, seq int32, p hooks.Point) []float64 {
	t, ok := c.Get(seq, p.Name())
	if !ok {
		panic(fmt.Sprintf("attrib: no %s for sequence %d", p.Name(), seq))
	}
	return t.ToF64()
}

// delta is a(corrupt) − a(clean) at point p on the clean run's positions: clean position q takes
// the corrupt activation at q − Shift; positions before the first difference, prompt positions
// with no counterpart and the continuation get 0.
func (pr *pairRun) delta(p hooks.Point, width int) []float64 {
	c, k := act(pr.clean, pr.seq, p), act(pr.corrupt, pr.kseq, p)
	d := make([]float64, pr.n*width)
	nk := len(pr.in.Corrupt)
	for q := pr.first; q < len(pr.in.Clean); q++ {
		src := q - pr.in.Shift
		if src < 0 || src >= nk {
			continue
		}
		for e := 0; e < width; e++ {
			d[q*width+e] = k[src*width+e] - c[q*width+e]
		}
	}
	return d
}

// score is plain AtP on one pair: for each node, Σ (a(corrupt) − a(clean)) · ∂M/∂a over the
// node's elements, with gradients from grads.
func (a *analysis) score(pr *pairRun, grads *hooks.Cache) Scores {
	np := len(pr.in.Clean)
	s := a.newScores(np)
	for _, p := range a.reads {
		set := func(q, h int, v float64) { setScore(s, p, q, h, v) }
		ct, kt, gt := get(pr.clean, pr.seq, p), get(pr.corrupt, pr.kseq, p), get(grads, pr.seq, p)
		if ct.DType == tensor.F64 {
			scorePoint(ct.F64(), kt.F64(), gt.F64(), a.dims.Width(p), a.chunk(p), pr.first, np, pr.in.Shift, len(pr.in.Corrupt), set)
		} else {
			scorePoint(ct.F32(), kt.F32(), gt.F32(), a.dims.Width(p), a.chunk(p), pr.first, np, pr.in.Shift, len(pr.in.Corrupt), set)
		}
	}
	return s
}

// newScores makes zeroed grids of every scored kind for a prompt of np positions.
func (a *analysis) newScores(np int) Scores {
	var s Scores
	c := a.cfg
	for _, k := range a.kinds {
		heads := c.Heads
		if k == Key {
			heads = c.KVHeads
		}
		s[k] = NewGrid(k, c.Layers, heads, np)
	}
	return s
}

// chunk is the values of point p one node takes: a head's d_head, or the whole row.
func (a *analysis) chunk(p hooks.Point) int {
	if p.PerHead() {
		return a.cfg.HeadDim
	}
	return a.dims.Width(p)
}

// setScore stores the product v of point p's node at position q and head h (0 for a whole row)
// in the grid of its kind; z's products also add into the head's total over positions.
func setScore(s Scores, p hooks.Point, q, h int, v float64) {
	var k Kind
	switch p.Kind {
	case hooks.ResidPre:
		k = ResidPre
	case hooks.AttnOut:
		k = AttnOut
	case hooks.MLPOut:
		k = MLPOut
	case hooks.Z:
		k = HeadPos
	case hooks.Q:
		k = Query
	case hooks.K:
		k = Key
	}
	if !k.perHead() {
		h = -1
	}
	if s[k] != nil {
		s[k].Set(Node{Kind: k, Layer: p.Layer, Head: h, Pos: q}, v)
	}
	if p.Kind == hooks.Z && s[Head] != nil {
		n := Node{Kind: Head, Layer: p.Layer, Head: h, Pos: -1}
		s[Head].Set(n, s[Head].At(n)+v)
	}
}

// get is a run's tensor at a point.
func get(c *hooks.Cache, seq int32, p hooks.Point) *tensor.Tensor {
	t, ok := c.Get(seq, p.Name())
	if !ok {
		panic(fmt.Sprintf("attrib: no %s for sequence %d", p.Name(), seq))
	}
	return t
}

// scorePoint scores the nodes of one point at positions [first, np): rows of width values per
// position, split into nodes of chunk values (a head, or the whole row). Clean position q reads the
// corrupt row q − shift; positions with no counterpart score 0.
func scorePoint[T float32 | float64](clean, corrupt, grad []T, width, chunk, first, np, shift, nk int, set func(q, h int, v float64)) {
	for q := first; q < np; q++ {
		src := q - shift
		if src < 0 || src >= nk {
			continue
		}
		c, k, g := clean[q*width:(q+1)*width], corrupt[src*width:(src+1)*width], grad[q*width:(q+1)*width]
		for h := 0; h < width/chunk; h++ {
			var v float64
			for e := h * chunk; e < (h+1)*chunk; e++ {
				v += (float64(k[e]) - float64(c[e])) * float64(g[e])
			}
			set(q, h, v)
		}
	}
}

func dot(a, b []float64) float64 {
	var s float64
	for i, x := range a {
		s += x * b[i]
	}
	return s
}

// average fills the Result's mean grids, metric means and column labels from its pairs.
func (a *analysis) average() {
	res := a.res
	for _, pr := range res.Pairs {
		res.Width = max(res.Width, len(pr.Input.Clean))
	}
	w := res.Width
	n := float64(len(res.Pairs))
	for _, pr := range res.Pairs {
		res.Clean += pr.Clean / n
		res.Corrupt += pr.Corrupt / n
	}
	for m := Method(0); m < numMethods; m++ {
		for _, k := range a.kinds {
			if res.Pairs[0].Scores[m][k] == nil {
				continue
			}
			res.Mean[m][k] = a.meanGrid(m, k)
		}
	}
	res.Labels = make([]string, w)
	for c := range res.Labels {
		label, same := "", true
		for _, pr := range res.Pairs {
			q := c - (w - len(pr.Input.Clean))
			if q < 0 {
				continue
			}
			if label == "" {
				label = pr.Input.Labels[q]
			} else if label != pr.Input.Labels[q] {
				same = false
			}
		}
		if !same || label == "" {
			label = fmt.Sprintf("−%d", w-1-c)
		}
		res.Labels[c] = label
	}
}

// meanGrid averages one method's grids of a kind over the pairs, aligned at the end. A NaN in a
// pair's grid (a node exact patching did not run) makes the mean NaN.
func (a *analysis) meanGrid(m Method, k Kind) *Grid {
	res := a.res
	g0 := res.Pairs[0].Scores[m][k]
	mean := NewGrid(k, g0.Layers, g0.Heads, res.Width)
	n := float64(len(res.Pairs))
	for _, pr := range res.Pairs {
		g := pr.Scores[m][k]
		shift := res.Width - len(pr.Input.Clean)
		for i, v := range g.Data {
			node := g.Node(i)
			if k.perPos() {
				node.Pos += shift
			}
			mean.Set(node, mean.At(node)+v/n)
		}
	}
	return mean
}
