package bench

import (
	"syscall"
	"testing"
	"time"

	"github.com/tillerlm/tiller/attrib"
	"github.com/tillerlm/tiller/llama"
)

// atpPairs makes n pairs of 64-token prompts that begin with the model's BOS and differ at the
// given positions, with a logit difference at the last token as the metric.
func atpPairs(m *llama.Model, n int, diffs ...int) []*attrib.Input {
	out := make([]*attrib.Input, n)
	for i := range out {
		clean := make([]int32, 64)
		for k := range clean {
			clean[k] = int32((k*7919 + 13 + 1000*i) % m.Config.Vocab)
		}
		clean[0] = int32(max(m.Config.BOS, 0))
		corrupt := append([]int32(nil), clean...)
		for _, p := range diffs {
			corrupt[p] = int32((int(corrupt[p]) + 4242) % m.Config.Vocab)
		}
		in := &attrib.Input{Line: i + 1, Clean: clean, Corrupt: corrupt, A: 100, B: 200, Metric: attrib.MetricSpec{LogitDiff: []string{"#100", "#200"}}}
		for range clean {
			in.Labels = append(in.Labels, "t")
		}
		out[i] = in
	}
	return out
}

// cpuTime is the CPU time the process has used, user and system, over all threads. On a shared
// machine it counts what tiller did rather than how long it waited for a core, so the ratios are
// also reported in it.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// forwardTime is the time of one plain forward pass over each pair's clean prompt, one prompt
// per pass, logits at the last token only: the "one forward pass" AtP is measured against.
func forwardTime(b *testing.B, r *llama.Runner, ins []*attrib.Input) time.Duration {
	start := time.Now()
	for _, in := range ins {
		if _, err := r.Forward(llama.Prompt(0, in.Clean, 0, false), r.NewKVCache(len(in.Clean), 16), nil); err != nil {
			b.Fatal(err)
		}
	}
	return time.Since(start) / time.Duration(len(ins))
}

// midPrompt are the positions where the pairs differ in most benchmarks: the first difference a
// third of the way in, as where a chat's reply differs after the system and user turns. AtP does
// no work before the first difference (the corrupt run takes the clean run's keys and values of
// the shared prefix, and the backward pass stops there); firstToken is the worst case, a pair
// that differs right after the BOS.
var (
	midPrompt  = []int{20, 41, 57}
	firstToken = []int{1, 41, 57}
)

// benchAtP times AtP per pair (attrib.Run with the default nodes: resid_pre, attn_out, mlp_out per
// layer and position, hook_z per head and per head and position) on the Llama-3.2-1B shape in
// F32 on 2 threads, pairs batched `batch` at a time, against plain forward passes of the same
// prompts timed before and after in the same iteration. It reports AtP per pair as a multiple
// of one forward pass (DESIGN.md's goal: <= 3), in wall-clock time and in the process's CPU
// time, and the parts: the recorded forward pass of both prompts that reads the nodes, and
// the backward.
func benchAtP(b *testing.B, pairs, batch int, star bool, diffs []int) {
	benchAtPOn(b, loadRunner(b, "llama-3.2-1b-instruct", 2), pairs, batch, star, diffs)
}

func benchAtPOn(b *testing.B, r *llama.Runner, pairs, batch int, star bool, diffs []int) {
	ins := atpPairs(r.Model, pairs, diffs...)
	forwardTime(b, r, ins[:1]) // first touch of the weights and buffers
	var ratio, cpuRatio, forward, backward, extra float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c0 := cpuTime()
		f0 := forwardTime(b, r, ins)
		c1 := cpuTime()
		res, err := attrib.Run(r, ins, attrib.Options{Batch: batch, Star: star})
		if err != nil {
			b.Fatal(err)
		}
		c2 := cpuTime()
		fwd := float64((f0 + forwardTime(b, r, ins)) / 2)
		c3 := cpuTime()
		t := res.Timing
		per := float64(pairs)
		cpuFwd := float64(c1-c0+c3-c2) / 2 / per
		cpuRatio += float64(c2-c1) / per / cpuFwd
		ratio += float64(t.AtP()) / per / fwd
		forward += float64(t.Forward) / per / fwd
		backward += float64(t.Backward) / per / fwd
		extra += float64(t.Star) / per / fwd
		b.Logf("forward %.3f s (CPU %.3f s); AtP %.3f s per pair (CPU %.3f s, AtP* and all)", fwd/1e9, cpuFwd/1e9, float64(t.AtP())/per/1e9, float64(c2-c1)/per/1e9)
	}
	n := float64(b.N)
	b.ReportMetric(ratio/n, "xForward")
	b.ReportMetric(cpuRatio/n, "xForward-cpu")
	b.ReportMetric(forward/n, "forward-xF")
	b.ReportMetric(backward/n, "backward-xF")
	if star {
		b.ReportMetric(extra/n, "star-extra-xF")
	}
}

func BenchmarkAtPLlama32_1B_1Pair(b *testing.B)           { benchAtP(b, 1, 1, false, midPrompt) }
func BenchmarkAtPLlama32_1B_1PairFirstToken(b *testing.B) { benchAtP(b, 1, 1, false, firstToken) }
func BenchmarkAtPLlama32_1B_4PairsBatched(b *testing.B)   { benchAtP(b, 4, 4, false, midPrompt) }
func BenchmarkAtPStarLlama32_1B_1Pair(b *testing.B)       { benchAtP(b, 1, 1, true, midPrompt) }
func BenchmarkAtPLlama32_1B_4PairsOneByOne(b *testing.B)  { benchAtP(b, 4, 1, false, midPrompt) }

// AtP on the real model of TILLER_BENCH_MODEL, as above.
func BenchmarkAtPReal_1Pair(b *testing.B) {
	benchAtPOn(b, loadFolder(b, realModel(b), 2), 1, 1, false, midPrompt)
}
func BenchmarkAtPReal_1PairFirstToken(b *testing.B) {
	benchAtPOn(b, loadFolder(b, realModel(b), 2), 1, 1, false, firstToken)
}

// Four pairs in one batch (attribute's default batches eight): the passes over the weights are
// shared by the pairs of a batch.
func BenchmarkAtPReal_4PairsBatched(b *testing.B) {
	benchAtPOn(b, loadFolder(b, realModel(b), 2), 4, 4, false, midPrompt)
}
func BenchmarkAtPReal_4PairsBatchedFirstToken(b *testing.B) {
	benchAtPOn(b, loadFolder(b, realModel(b), 2), 4, 4, false, firstToken)
}

// BenchmarkExactPatchingLlama32_1B times exact activation patching of a sample of 24 nodes of one
// pair (each a forward pass of the clean prompt from the patched position on, 24 to a batch)
// and AtP of the same pair, and reports the cost of patching every node of the pair as a
// multiple of AtP, and one patched run as a multiple of a forward pass.
func BenchmarkExactPatchingLlama32_1B(b *testing.B) {
	r := loadRunner(b, "llama-3.2-1b-instruct", 2)
	ins := atpPairs(r.Model, 1, midPrompt...)
	forwardTime(b, r, ins)
	var perRun, exactAll, nodes float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		fwd := float64(forwardTime(b, r, ins))
		res, err := attrib.Run(r, ins, attrib.Options{Verify: 24, Seed: uint64(i)})
		if err != nil {
			b.Fatal(err)
		}
		t := res.Timing
		run := float64(t.Exact) / float64(t.Patched)
		nodes = 0
		for _, k := range res.Kinds {
			nodes += float64(len(res.Mean[attrib.AtP][k].Data))
		}
		perRun += run / fwd
		exactAll += nodes * run / float64(t.AtP())
		b.Logf("forward %.3f s; patched run %.3f s; %0.f nodes; AtP %.3f s", fwd/1e9, run/1e9, nodes, t.AtP().Seconds())
	}
	n := float64(b.N)
	b.ReportMetric(perRun/n, "run-xForward")
	b.ReportMetric(nodes, "nodes")
	b.ReportMetric(exactAll/n, "exactAll-xAtP")
}
