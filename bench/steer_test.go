package bench

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/tillerlm/tiller/hooks"
	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/steer"
	"github.com/tillerlm/tiller/tensor"
)

// unitVector is a random unit steering vector at hook_resid_post of the given layer, with a
// made-up residual norm so relative strengths work.
func unitVector(d, layer int) *steer.Vector {
	rng := rand.New(rand.NewPCG(3, 4))
	vals := make([]float32, d)
	var n float64
	for i := range vals {
		vals[i] = float32(rng.NormFloat64())
		n += float64(vals[i]) * float64(vals[i])
	}
	for i := range vals {
		vals[i] /= float32(math.Sqrt(n))
	}
	return &steer.Vector{Hook: "hook_resid_post", Layers: []steer.Layer{{Index: layer, Values: vals, MeanNorm: 1}}}
}

var benchPrompt = []int32{128000, 9906, 11, 1268, 527, 499, 3432, 30, 358, 1097, 7060, 11, 9523, 369, 10371, 13}

// BenchmarkSteerDecodeOverhead times decode steps of the Llama-3.2-1B shape (2 threads) on three
// sequences advancing together: unsteered, steered (one vector at blocks.8.hook_resid_post, every
// position: the hook set `tiller steer` builds), and a second unsteered one as a control, one step
// of each per iteration in rotating order so drift of the shared machine hits all three alike.
// Reports ms per step, the steered overhead over the unsteered steps (from the totals, and the
// median over iterations, which a burst of load during one step does not move), and the same two
// for the control: the noise floor of the run, what an overhead of zero measures as.
func BenchmarkSteerDecodeOverhead(b *testing.B) {
	r := loadRunner(b, "llama-3.2-1b-instruct", 2)
	c := r.Model.Config
	plan := &steer.Plan{Vectors: []steer.Applied{{Name: "v", Vector: unitVector(c.Dim, 8), Strength: 4}}, Positions: "all"}
	_, decode, err := plan.Hooks(c, []int{len(benchPrompt)}, []float64{1})
	if err != nil {
		b.Fatal(err)
	}
	const plain, steered, control = 0, 1, 2
	sets := [3]*hooks.Set{plain: nil, steered: decode, control: nil}
	var kvs [3]*tensor.KVCache
	for k := range kvs {
		kvs[k] = r.NewKVCache(len(benchPrompt)+b.N+1, 16)
		if _, err := r.Forward(llama.Prompt(0, benchPrompt, 0, false), kvs[k], sets[k]); err != nil {
			b.Fatal(err)
		}
	}
	step := llama.Batch{Tokens: []int32{13}, Seq: []int32{0}, Pos: []int32{0}, Logits: []bool{true}}
	var total [3]time.Duration
	steerRatio, controlRatio := make([]float64, b.N), make([]float64, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		step.Pos[0] = int32(len(benchPrompt) + i)
		var t [3]time.Duration
		for j := range 3 {
			k := (i + j) % 3 // rotate the order, so none always follows another
			start := time.Now()
			if _, err := r.Forward(step, kvs[k], sets[k]); err != nil {
				b.Fatal(err)
			}
			t[k] = time.Since(start)
			total[k] += t[k]
		}
		steerRatio[i] = t[steered].Seconds() / t[plain].Seconds()
		controlRatio[i] = t[control].Seconds() / t[plain].Seconds()
	}
	median := func(xs []float64) float64 { slices.Sort(xs); return xs[len(xs)/2] }
	b.ReportMetric(total[plain].Seconds()*1e3/float64(b.N), "plain-ms/step")
	b.ReportMetric(total[steered].Seconds()*1e3/float64(b.N), "steered-ms/step")
	b.ReportMetric(100*(total[steered].Seconds()/total[plain].Seconds()-1), "overhead-%")
	b.ReportMetric(100*(median(steerRatio)-1), "median-overhead-%")
	b.ReportMetric(100*(total[control].Seconds()/total[plain].Seconds()-1), "control-%")
	b.ReportMetric(100*(median(controlRatio)-1), "median-control-%")
}

// BenchmarkSteerAddRow times what steering adds to a decode step by itself: the hook set's
// addition h += alpha·v on one (1, 2048) row at one point (Llama-3.2-1B's d_model), for comparing
// with the step's time without the machine's noise.
func BenchmarkSteerAddRow(b *testing.B) {
	d := hooks.Dims{Layers: 16, DModel: 2048, Heads: 32, KVHeads: 8, DHead: 64, DMLP: 8192}
	plan := &steer.Plan{Vectors: []steer.Applied{{Name: "v", Vector: unitVector(d.DModel, 8), Strength: 4}}, Positions: "all"}
	cfg := &llama.Config{Dim: d.DModel, Layers: d.Layers, Heads: d.Heads, KVHeads: d.KVHeads, HeadDim: d.DHead, FFNDim: d.DMLP}
	_, decode, err := plan.Hooks(cfg, []int{16}, []float64{1})
	if err != nil {
		b.Fatal(err)
	}
	x := tensor.New(tensor.F32, 1, d.DModel)
	seq, pos := []int32{0}, []int32{16}
	p := hooks.Point{Layer: 8, Kind: hooks.ResidPost}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := decode.At(p, x, seq, pos); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSweep4 times a 4-strength sweep (0, 2, 4, 8) of one 16-token prompt, 8 new tokens each,
// greedy, on the Llama-3.2-1B shape (2 threads): as `tiller steer --sweep` runs it, one batch of 4
// sequences, against 4 separate runs of one sequence, alternating per iteration. Reports the
// seconds of each and the speed-up.
func BenchmarkSweep4(b *testing.B) {
	r := loadRunner(b, "llama-3.2-1b-instruct", 2)
	c := r.Model.Config
	plan := &steer.Plan{Vectors: []steer.Applied{{Name: "v", Vector: unitVector(c.Dim, 8), Strength: 1}}, Positions: "all"}
	sweep := []float64{0, 2, 4, 8}
	opts := steer.GenOptions{MaxTokens: 8, Stop: []int32{}}
	batched := func() {
		if _, _, err := steer.Generate(r, plan, [][]int32{benchPrompt}, sweep, opts); err != nil {
			b.Fatal(err)
		}
	}
	separate := func() {
		for _, s := range sweep {
			if _, _, err := steer.Generate(r, plan, [][]int32{benchPrompt}, []float64{s}, opts); err != nil {
				b.Fatal(err)
			}
		}
	}
	var tb, ts time.Duration
	b.ResetTimer()
	timed := func(f func()) time.Duration {
		start := time.Now()
		f()
		return time.Since(start)
	}
	for i := 0; i < b.N; i++ {
		if i%2 == 0 { // alternate which goes first, so neither always follows the other
			tb += timed(batched)
			ts += timed(separate)
		} else {
			ts += timed(separate)
			tb += timed(batched)
		}
	}
	b.ReportMetric(tb.Seconds()/float64(b.N), "batched-s")
	b.ReportMetric(ts.Seconds()/float64(b.N), "separate-s")
	b.ReportMetric(ts.Seconds()/tb.Seconds(), "speedup")
}
