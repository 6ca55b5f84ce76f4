package bench

import (
	"fmt"
	"testing"

	"github.com/tillerlm/tiller/tensor"
)

// Attention on the CPU at real head shapes, 2 threads: the prefill of a prompt of n tokens (every
// token over the positions before it) and one decode step at a context of ctx positions, over a
// paged cache of blocks of 16. It reports GFLOP/s (4·d FLOPs per query and key: q·k and the mix)
// against the FMA peak of the same cores (againstPeak), and for decode the cache bytes read per
// second.

var attentionShapes = []struct {
	model               string
	heads, kvHeads, dim int
}{
	{"smollm2-135m", 9, 3, 64},
	{"llama-3.2-1b", 32, 8, 64},
	{"llama-3.1-8b", 32, 8, 128},
}

func BenchmarkAttention(b *testing.B) {
	for _, s := range attentionShapes {
		for _, dt := range []tensor.DType{tensor.F32, tensor.BF16} {
			for _, n := range []int{512, 2048} {
				b.Run(fmt.Sprintf("%s/%s/prefill=%d", s.model, dt, n), func(b *testing.B) {
					benchAttention(b, s.heads, s.kvHeads, s.dim, dt, n, n)
				})
			}
			for _, ctx := range []int{32, 512, 2048} {
				b.Run(fmt.Sprintf("%s/%s/decode-ctx=%d", s.model, dt, ctx), func(b *testing.B) {
					benchAttention(b, s.heads, s.kvHeads, s.dim, dt, ctx, 1)
				})
			}
		}
	}
}

// benchAttention times the attention of the last n of ctx positions of one sequence.
func benchAttention(b *testing.B, heads, kvHeads, dim int, cache tensor.DType, ctx, n int) {
	cpu := tensor.NewCPU(matmulThreads)
	defer cpu.Close()
	kv := tensor.NewKVCacheOf(cpu, cache, 1, kvHeads, dim, 16, (ctx+15)/16)
	if err := kv.Reserve(0, ctx); err != nil {
		b.Fatal(err)
	}
	seq, pos := make([]int32, ctx), make([]int32, ctx)
	for i := range pos {
		pos[i] = int32(i)
	}
	k, v := tensor.New(tensor.F32, ctx, kvHeads, dim), tensor.New(tensor.F32, ctx, kvHeads, dim)
	for i, kd, vd := 0, k.F32(), v.F32(); i < len(kd); i++ {
		kd[i] = float32(i%89)/89 - 0.5
		vd[i] = float32(i%97)/97 - 0.5
	}
	cpu.StoreKV(kv, 0, k, v, seq, pos)
	q := tensor.New(tensor.F32, n, heads, dim)
	for i, qd := 0, q.F32(); i < len(qd); i++ {
		qd[i] = float32(i%83)/83 - 0.5
	}
	dst := tensor.New(tensor.F32, n, heads*dim)
	seq, pos = seq[ctx-n:], pos[ctx-n:]
	keys := 0
	for _, p := range pos {
		keys += int(p) + 1
	}
	cpu.Attention(dst, q, kv, 0, seq, pos)
	b.ResetTimer()
	gflops, _, ratio := againstPeak(b, 4*float64(dim*heads*keys), func(int) { cpu.Attention(dst, q, kv, 0, seq, pos) })
	b.ReportMetric(gflops, "GFLOP/s")
	b.ReportMetric(ratio, "x-peak")
	if n == 1 {
		sec := b.Elapsed().Seconds() / float64(b.N)
		b.ReportMetric(float64(2*ctx*kvHeads*dim*cache.Size())/sec/1e9, "cache-GB/s")
	}
}
