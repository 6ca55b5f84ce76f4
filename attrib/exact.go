package attrib

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sort"
	"sync"
	"time"

	"github.com/tillerlm/tiller/hooks"
	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/tensor"
)

// VerifyAuto asks exact patching for every node when that is estimated to take under a minute,
// and for none otherwise (the Verification then says how long all nodes would take).
const VerifyAuto = -2

// Verification compares the estimates with exact activation patching — the clean run rerun with
// one node taken from the corrupt run, ΔM = M(patched) − M(clean) — on the nodes it ran.
type Verification struct {
	Sample  string      // which nodes were patched
	Nodes   int         // nodes of the averaged grids patched (in every pair that has them)
	Skipped string      // why nothing was patched (VerifyAuto on a large run), else ""
	Stats   []Agreement // per method and kind, then over all kinds
	Worst   []Miss      // the nodes where AtP is furthest from the exact effect, worst first
}

// Agreement is the correlation of one method's scores with the exact effects over some nodes.
// GradDrop, a magnitude, is compared with |exact|.
type Agreement struct {
	Method   Method
	Kind     string // a node kind, or "all"
	N        int
	Pearson  float64
	Spearman float64
}

// Miss is a node with its exact effect and estimates (AtPStar and GradDrop NaN without AtP*).
type Miss struct {
	Node                          Node
	Exact, AtP, AtPStar, GradDrop float64
}

// verify runs exact patching on the nodes Options.Verify asks for, fills the Exact grids (NaN
// where not run) and the Verification.
func (a *analysis) verify() error {
	res := a.res
	var all []Node
	for _, k := range a.kinds {
		all = append(all, res.Mean[AtP][k].Nodes()...)
	}
	n := a.opt.Verify
	v := &Verification{}
	res.Verified = v
	switch {
	case n == VerifyAuto:
		// A patched run is about a forward pass of one prompt; AtP's pass ran two per pair.
		perRun := a.res.Timing.Forward.Seconds() / 2 / float64(len(res.Pairs))
		est := time.Duration(perRun * float64(len(all)*len(res.Pairs)) * float64(time.Second))
		if est > time.Minute {
			v.Skipped = fmt.Sprintf("exact patching of all %d nodes in %d pairs would take about %s; ask for a sample with --verify N", len(all), len(res.Pairs), est.Round(time.Second))
			return nil
		}
		n = VerifyAll
		fallthrough
	case n == VerifyAll || n >= len(all):
		v.Sample = "every node"
	default:
		all = a.sample(all, n)
		v.Sample = fmt.Sprintf("%d nodes: the %d with the largest |AtP| and %d drawn at random (seed %d)", n, n/2, n-n/2, a.opt.Seed)
	}
	v.Nodes = len(all)

	for _, pr := range res.Pairs {
		var s Scores
		for _, k := range a.kinds {
			g := pr.Scores[AtP][k]
			s[k] = NewGridNaN(k, g.Layers, g.Heads, g.Positions)
		}
		pr.Scores[Exact] = s
	}
	for i, pr := range res.Pairs {
		shift := res.Width - len(pr.Input.Clean)
		var nodes []Node
		for _, node := range all {
			if node.Kind.perPos() {
				node.Pos -= shift
				if node.Pos < 0 {
					continue
				}
			}
			nodes = append(nodes, node)
		}
		t0 := time.Now()
		effects, err := a.exactPair(pr, nodes)
		if err != nil {
			return err
		}
		a.res.Timing.Exact += time.Since(t0)
		for j, node := range nodes {
			pr.Scores[Exact][node.Kind].Set(node, effects[j])
		}
		fmt.Fprintf(a.opt.Progress, "verify: pair %d/%d, %d patched runs (%.2f s per run)\n", i+1, len(res.Pairs), len(nodes), a.res.Timing.Exact.Seconds()/float64(max(a.res.Timing.Patched, 1)))
	}
	for _, k := range a.kinds {
		res.Mean[Exact][k] = a.meanGrid(Exact, k)
	}
	a.agreement(all)
	return nil
}

// sample picks n nodes: the n/2 with the largest |mean AtP|, then n − n/2 of the rest at random.
func (a *analysis) sample(all []Node, n int) []Node {
	score := func(x Node) float64 { return math.Abs(a.res.Mean[AtP][x.Kind].At(x)) }
	sorted := append([]Node(nil), all...)
	sort.SliceStable(sorted, func(i, j int) bool { return score(sorted[i]) > score(sorted[j]) })
	out := append([]Node(nil), sorted[:n/2]...)
	rest := sorted[n/2:]
	rng := rand.New(rand.NewPCG(a.opt.Seed, 0x5eed))
	for _, i := range rng.Perm(len(rest))[:n-n/2] {
		out = append(out, rest[i])
	}
	return out
}

// exactPair measures the exact effect of patching each node (on the pair's own positions) from the
// corrupt run into the clean run. Patched runs go in batches of copies of the clean prompt, each
// batch with one unpatched copy whose metric is the baseline, so that effects are differences
// within one forward pass.
func (a *analysis) exactPair(pr *PairResult, nodes []Node) ([]float64, error) {
	in, r := pr.Input, a.r
	// The corrupt activations at every point the nodes need, moved to the clean positions.
	need := map[hooks.Point]bool{}
	for _, node := range nodes {
		need[node.Kind.Point(node.Layer)] = true
	}
	var points []hooks.Point
	for p := range need {
		points = append(points, p)
	}
	if len(points) == 0 {
		return nil, nil
	}
	read := a.readSetOf(points)
	defer a.release(read)
	toks := append(append([]int32(nil), in.Corrupt...), in.Cont...)
	ckv := r.NewKVCache(len(toks), 16)
	_, err := r.Forward(llama.Prompt(0, toks, 0, false), ckv, read)
	r.FreeKVCache(ckv)
	if err != nil {
		return nil, err
	}
	clean := append(append([]int32(nil), in.Clean...), in.Cont...)
	n, np := len(clean), len(in.Clean)
	var mapped []int32 // clean prompt positions with a corrupt counterpart
	for q := 0; q < np; q++ {
		if src := q - in.Shift; src >= 0 && src < len(in.Corrupt) {
			mapped = append(mapped, int32(q))
		}
	}
	// The patch values: the corrupt activations moved to the clean positions (rows without a
	// counterpart are never patched). On a device they are gathered there from the capture, once
	// per pair.
	values := map[hooks.Point]*tensor.Tensor{}
	for p := range need {
		width := a.dims.Width(p)
		if a.dev != nil {
			src := make([]int32, n)
			for _, q := range mapped {
				src[q] = q - int32(in.Shift)
			}
			v := a.dev.Alloc(tensor.F32, a.dims.Shape(p, n)...)
			defer a.dev.Free(v)
			a.dev.Embedding(flat(v), flat(read.Captured[p][0].X), src)
			values[p] = v
			continue
		}
		k := act(read.Cache, 0, p)
		v := make([]float64, n*width)
		for _, q := range mapped {
			src := int(q) - in.Shift
			copy(v[int(q)*width:(int(q)+1)*width], k[src*width:(src+1)*width])
		}
		values[p] = tensor.FromF64(v, a.dims.Shape(p, n)...)
	}

	// Every patched run starts from the clean run's keys and values before its first patched
	// position (copied from sequence 0 of the cache), so only the positions after it are run:
	// about half the tokens of whole runs.
	block := 16
	rounded := (n + block - 1) / block * block
	per := max(a.opt.ExactTokens/max(n/2, 1), 2) // sequences per batch, the unpatched one included
	kv := r.NewKVCache(rounded*(per+1), block)
	defer r.FreeKVCache(kv)
	if _, err := r.Forward(llama.Prompt(0, clean, 0, false), kv, nil); err != nil {
		return nil, err
	}
	from := func(node Node) int {
		if node.Kind.perPos() {
			return node.Pos
		}
		if len(mapped) == 0 {
			return np - 1
		}
		return int(mapped[0])
	}
	// Nodes with no counterpart in the corrupt prompt (right alignment) are not patched: their
	// effect is 0 without a run.
	var order []int
	for i, node := range nodes {
		if (!node.Kind.perPos() && len(mapped) > 0) || contains(mapped, int32(node.Pos)) {
			order = append(order, i)
		}
	}
	sort.SliceStable(order, func(i, j int) bool { return from(nodes[order[i]]) < from(nodes[order[j]]) })

	effects := make([]float64, len(nodes))
	first, rows := np-1, max(len(in.Cont), 1)
	for lo := 0; lo < len(order); lo += per - 1 {
		chunk := order[lo:min(lo+per-1, len(order))]
		var b llama.Batch
		set := hooks.NewSet(a.dims)
		// Sequence 1 is the unpatched baseline, run from the chunk's earliest start.
		starts := []int{from(nodes[chunk[0]])}
		for _, i := range chunk {
			starts = append(starts, from(nodes[i]))
		}
		for j, st := range starts {
			seq := int32(j + 1)
			if err := a.forkPrefix(kv, seq, st, n); err != nil {
				return nil, err
			}
			for k := st; k < n; k++ {
				b.Tokens = append(b.Tokens, clean[k])
				b.Seq = append(b.Seq, seq)
				b.Pos = append(b.Pos, int32(k))
				b.Logits = append(b.Logits, k >= first && k < first+rows)
			}
			if j == 0 {
				continue
			}
			node := nodes[chunk[j-1]]
			w := hooks.Where{Seqs: []int32{seq}, Positions: []int32{int32(node.Pos)}}
			if !node.Kind.perPos() {
				w.Positions = mapped
			}
			if node.Kind.perHead() {
				w.Heads = []int{node.Head}
			}
			p := node.Kind.Point(node.Layer)
			if err := set.Replace(p.Name(), values[p], w); err != nil {
				return nil, err
			}
		}
		vals, err := a.patchedValues(in, b, kv, set, len(chunk)+1, rows)
		if err != nil {
			return nil, err
		}
		for j, i := range chunk {
			effects[i] = vals[j+1] - vals[0]
		}
		for j := range starts {
			kv.Release(j + 1)
		}
		a.res.Timing.Patched += len(chunk)
	}
	return effects, nil
}

// patchedValues runs a batch of copies of the clean prompt (each rows logit rows, in order) with
// the set's patches and returns each copy's metric. On a device only the metric's values cross:
// the logits it reads and, for a log-probability, each row's log-sum-exp.
func (a *analysis) patchedValues(in *Input, b llama.Batch, kv *tensor.KVCache, set *hooks.Set, copies, rows int) ([]float64, error) {
	vals := make([]float64, copies)
	if a.dev != nil {
		logits, err := a.r.ForwardDevice(b, kv, set)
		if err != nil {
			return nil, err
		}
		var cols []int32
		for j := 0; j < copies; j++ {
			if in.Cont == nil {
				cols = append(cols, in.A, in.B)
			} else {
				cols = append(cols, in.Cont...)
			}
		}
		// One column per row for a log-probability (its token), two in the one row of a logit
		// difference.
		x, lse := a.dev.MetricLogits(logits, cols, in.Cont != nil)
		for j := range vals {
			if in.Cont == nil {
				vals[j] = float64(x[2*j]) - float64(x[2*j+1])
				continue
			}
			for k := range in.Cont {
				vals[j] += float64(x[j*rows+k]) - lse[j*rows+k]
			}
		}
		return vals, nil
	}
	logits, err := a.r.Forward(b, kv, set)
	if err != nil {
		return nil, err
	}
	// The metric's softmax over the vocabulary costs as much as a small model's forward pass:
	// spread the copies over the CPUs.
	var wg sync.WaitGroup
	workers := runtime.GOMAXPROCS(0)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := w; j < len(vals); j += workers {
				vals[j] = value(in, run{row: j * rows, nr: rows}, logits)
			}
		}()
	}
	wg.Wait()
	return vals, nil
}

// forkPrefix gives sequence seq room for n positions and copies sequence 0's keys and values at
// positions [0, upto) into it, in every layer: on the host row by row, on a device as a gather of
// the rows and a store (tensor.Backend's Embedding and StoreKV).
func (a *analysis) forkPrefix(kv *tensor.KVCache, seq int32, upto, n int) error {
	if err := kv.Reserve(int(seq), n); err != nil {
		return err
	}
	if a.dev != nil {
		if upto == 0 {
			return nil
		}
		width := kv.KVHeads * kv.HeadDim
		rows, seqs, pos := make([]int32, upto), make([]int32, upto), make([]int32, upto)
		for p := range rows {
			rows[p], seqs[p], pos[p] = int32(kv.Row(0, int32(p))), seq, int32(p)
		}
		k, v := a.dev.Alloc(tensor.F32, upto, width), a.dev.Alloc(tensor.F32, upto, width)
		defer a.dev.Free(k)
		defer a.dev.Free(v)
		for l := 0; l < kv.Layers; l++ {
			a.dev.Embedding(k, kv.K[l].Reshape(kv.Blocks()*kv.BlockSize, width), rows)
			a.dev.Embedding(v, kv.V[l].Reshape(kv.Blocks()*kv.BlockSize, width), rows)
			a.dev.StoreKV(kv, l, k, v, seqs, pos)
		}
		return nil
	}
	rb := kv.KVHeads * kv.HeadDim * kv.DType().Size()
	for l := 0; l < kv.Layers; l++ {
		for _, t := range []*tensor.Tensor{kv.K[l], kv.V[l]} {
			for p := 0; p < upto; p++ {
				src, dst := kv.Row(0, int32(p)), kv.Row(seq, int32(p))
				copy(t.Data[dst*rb:(dst+1)*rb], t.Data[src*rb:(src+1)*rb])
			}
		}
	}
	return nil
}

func contains(s []int32, x int32) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}

// agreement fills the Verification's correlations and worst misses over the patched nodes of
// the averaged grids.
func (a *analysis) agreement(nodes []Node) {
	res, v := a.res, a.res.Verified
	methods := []Method{AtP}
	if a.opt.Star {
		methods = append(methods, AtPStar, GradDrop)
	}
	for _, m := range methods {
		var allX, allY []float64
		for _, k := range a.kinds {
			var xs, ys []float64
			for _, node := range nodes {
				if node.Kind != k {
					continue
				}
				e := res.Mean[Exact][k].At(node)
				if m == GradDrop {
					e = math.Abs(e)
				}
				xs = append(xs, res.Mean[m][k].At(node))
				ys = append(ys, e)
			}
			if len(xs) == 0 {
				continue
			}
			v.Stats = append(v.Stats, Agreement{Method: m, Kind: k.String(), N: len(xs), Pearson: Pearson(xs, ys), Spearman: Spearman(xs, ys)})
			allX, allY = append(allX, xs...), append(allY, ys...)
		}
		v.Stats = append(v.Stats, Agreement{Method: m, Kind: "all", N: len(allX), Pearson: Pearson(allX, allY), Spearman: Spearman(allX, allY)})
	}
	misses := make([]Miss, len(nodes))
	for i, node := range nodes {
		misses[i] = Miss{Node: node, Exact: res.Mean[Exact][node.Kind].At(node), AtP: res.Mean[AtP][node.Kind].At(node), AtPStar: math.NaN(), GradDrop: math.NaN()}
		if a.opt.Star {
			misses[i].AtPStar = res.Mean[AtPStar][node.Kind].At(node)
			misses[i].GradDrop = res.Mean[GradDrop][node.Kind].At(node)
		}
	}
	sort.SliceStable(misses, func(i, j int) bool {
		return math.Abs(misses[i].AtP-misses[i].Exact) > math.Abs(misses[j].AtP-misses[j].Exact)
	})
	v.Worst = misses[:min(len(misses), 5)]
}
