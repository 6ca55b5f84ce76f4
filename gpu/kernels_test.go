//go:build cuda

package gpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/tillerlm/tiller/tensor"
	"github.com/tillerlm/tiller/tensor/tensortest"
)

// The GEMV computes in f32 from exact weights, so it meets the f32 bound at every token count
// (1, 2, 3→4, 5→8, 8 compiled), with 16-byte rows and without, in one shared-memory chunk of x
// or several, and with three segments in one launch.
func TestGEMV(t *testing.T) {
	b := newBackend(t)
	rng := rand.New(rand.NewPCG(11, 11))
	for _, dt := range []tensor.DType{tensor.F32, tensor.BF16, tensor.F16} {
		for _, s := range [][2]int{{4096, 50}, {264, 33}, {67, 20}, {9000, 17}} {
			in := s[0]
			for _, n := range []int{1, 2, 3, 5, 8} {
				outs := []int{s[1], 16, 7}
				x := randomT(rng, tensor.F32, 1, n, in)
				xd := b.Upload(x)
				var segs []gemvSeg
				var ws, bs []*tensor.Tensor
				var ys []*tensor.Tensor
				for j, out := range outs {
					w := randomT(rng, dt, 1/math.Sqrt(float64(in)), out, in)
					var bias *tensor.Tensor
					if j != 1 {
						bias = randomT(rng, dt, 1, out)
					}
					y := poison(b, n, out)
					ws, bs, ys = append(ws, w), append(bs, bias), append(ys, y)
					seg := gemvSeg{w: b.Upload(w), y: dev(y)}
					if bias != nil {
						seg.bias = b.Upload(bias)
					}
					segs = append(segs, seg)
				}
				func() { defer b.enter()(); b.gemv(dev(xd), n, in, segs...) }()
				for j, out := range outs {
					var bias []float64
					if bs[j] != nil {
						bias = f64s(bs[j])
					}
					want := linear(f64s(x), f64s(ws[j]), bias, n, in, out)
					tensortest.Compare(t, fmt.Sprintf("gemv %s n=%d in=%d segment %d out=%d", dt, n, in, j, out), back(b, ys[j]), want, tensortest.F32)
				}
				// SwiGLU form against silu(gate)·up from the same reference.
				y := poison(b, n, outs[0])
				g, u := ws[0], randomT(rng, dt, 1/math.Sqrt(float64(in)), outs[0], in)
				func() {
					defer b.enter()()
					b.gemvSwiGLU(dev(y), dev(xd), n, in, segs[0].w, segs[0].bias, b.Upload(u), nil)
				}()
				gw := linear(f64s(x), f64s(g), f64s(bs[0]), n, in, outs[0])
				uw := linear(f64s(x), f64s(u), nil, n, in, outs[0])
				for i := range gw {
					gw[i] = gw[i] / (1 + math.Exp(-gw[i])) * uw[i]
				}
				tensortest.Compare(t, fmt.Sprintf("gemv swiglu %s n=%d in=%d", dt, n, in), back(b, y), gw, tensortest.F32)
			}
		}
	}
}

// The tensor-core GEMMs (gemm_*, and round_* + gemm_pipe_*) against a reference that rounds x to
// the weights' 16-bit type as the kernels do: what remains is f32 accumulation order, so the f32 bound holds and any
// slip in the mma fragment layouts (ldmatrix addresses, A/B/C register order) shows as a gross
// error at a specific index. Shapes cover ragged tiles in M, N and K and several k tiles.
func TestGEMMTensorCores(t *testing.T) {
	b := newBackend(t)
	b.NoSplitKGEMM = true // the prefill kernels, also at ≤ 128 rows where gemm would choose split-K
	b.WGMMAGEMM = false   // the mma.sync ones (TestGEMMWGMMA takes Hopper's)
	rng := rand.New(rand.NewPCG(12, 12))
	for _, dt := range []tensor.DType{tensor.BF16, tensor.F16} {
		for _, s := range [][3]int{{9, 8, 8}, {16, 16, 16}, {128, 128, 32}, {130, 136, 200}, {257, 72, 520}, {40, 1000, 264}, {300, 264, 1032}} {
			m, n, k := s[0], s[1], s[2]
			x := randomT(rng, tensor.F32, 1, m, k)
			w := randomT(rng, dt, 1/math.Sqrt(float64(k)), n, k)
			bias := randomT(rng, dt, 1, n)
			want := linear(roundTo(f64s(x), dt), f64s(w), f64s(bias), m, k, n)
			for _, pipe := range []bool{false, true} {
				y := poison(b, m, n)
				b.PipeGEMM = pipe
				func() { defer b.enter()(); b.gemm(dev(y), dev(b.Upload(x)), b.Upload(w), b.Upload(bias), m, n, k) }()
				tensortest.Compare(t, fmt.Sprintf("gemm %s M=%d N=%d K=%d (x rounded to %s, pipelined %v)", dt, m, n, k, dt, pipe), back(b, y), want, tensortest.F32)
			}
			b.PipeGEMM = true
			// And the tiled f32 kernel on the same problem against the exact product.
			y2 := poison(b, m, n)
			func() {
				defer b.enter()()
				b.args.reset().p(dev(y2)).p(dev(b.Upload(x))).p(dev(b.Upload(w))).p(dev(b.Upload(bias))).i(m).i(n).i(k)
				b.launch(b.kernel("gemm", "gemm_tiled_"+suffix(dt)), (n+63)/64, (m+63)/64, 1, 256, 0)
			}()
			exact := linear(f64s(x), f64s(w), f64s(bias), m, k, n)
			tensortest.Compare(t, fmt.Sprintf("gemm_tiled %s M=%d N=%d K=%d", dt, m, n, k), back(b, y2), exact, tensortest.F32)
		}
	}
}

// The split-K small-batch GEMM through the MatMul op, at the row counts of decode batches (9–128,
// all three row tiles) and odd output and input sizes, with and without bias, for both 16-bit
// weight types. Against a reference with x rounded as the kernel rounds it, what remains is f32
// accumulation order, so the f32 bound holds; against the exact product (at 64 rows), the
// BF16Inputs bound (x's rounding, 2⁻⁹ relative per term) that the MatMul suite holds the GPU to. A second
// run must match bit for bit: the partial sums are reduced in split order, without atomics.
func TestGEMMSmallBatch(t *testing.T) {
	b := newBackend(t)
	rng := rand.New(rand.NewPCG(14, 14))
	for _, dt := range []tensor.DType{tensor.BF16, tensor.F16} {
		for _, s := range []struct {
			out, in int
			bias    bool
		}{{520, 2056, true}, {72, 264, false}, {136, 4104, true}, {300, 1032, false}} {
			w := randomT(rng, dt, 1/math.Sqrt(float64(s.in)), s.out, s.in)
			wd := b.Upload(w)
			var bias, bd *tensor.Tensor
			var biasRef []float64
			if s.bias {
				bias = randomT(rng, dt, 1, s.out)
				bd, biasRef = b.Upload(bias), f64s(bias)
			}
			for _, n := range []int{9, 16, 33, 64, 100, 128} {
				x := randomT(rng, tensor.F32, 1, n, s.in)
				xd := b.Upload(x)
				splits, _ := splitKParts(n, s.out, s.in, b.SMs())
				name := fmt.Sprintf("split-K gemm %s n=%d out=%d in=%d bias=%v (%d splits)", dt, n, s.out, s.in, s.bias, splits)
				y := poison(b, n, s.out)
				b.MatMul(y, xd, wd, bd)
				got := back(b, y)
				tensortest.Compare(t, name+", x rounded", got, linear(roundTo(f64s(x), dt), f64s(w), biasRef, n, s.in, s.out), tensortest.F32)
				if n == 64 {
					tensortest.Compare(t, name+", exact", got, linear(f64s(x), f64s(w), biasRef, n, s.in, s.out), tensortest.BF16Inputs)
				}
				y2 := poison(b, n, s.out)
				b.MatMul(y2, xd, wd, bd)
				for i, v := range back(b, y2) {
					if math.Float32bits(v) != math.Float32bits(got[i]) {
						t.Errorf("%s: a second run differs at %d: %g then %g", name, i, got[i], v)
						break
					}
				}
			}
		}
	}
}

// The Hopper GEMM (gemm_wgmma_bf16, compute capability 9.0) through gemm, against the reference
// with x rounded to bf16 as round_bf16 does, and against gemm_pipe_bf16 on the same problem: what
// remains in both is the order of f32 sums, so the f32 bound holds, and a slip in the tensor maps,
// the swizzle or the descriptors shows as a gross error. Ragged rows (the TMA's zero fill), N even
// (paired stores) and odd, K with a ragged last tile and longer than the 4-stage ring, and 2049
// rows at the Llama-3.1-8B input width (two column slices of k/v_proj: the f64 reference's time).
// Then MatMulQKV past 128 rows, whose products share one
// rounding of x (gemmShared): each equals MatMul's bit for bit.
func TestGEMMWGMMA(t *testing.T) {
	b := newBackend(t)
	if b.ComputeCapability() != 90 {
		t.Skipf("gemm_wgmma_bf16 runs on compute capability 9.0 only; this card has %d", b.ComputeCapability())
	}
	if !b.HasWGMMA() {
		t.Fatalf("gemm_wgmma_bf16 did not load on a card of compute capability 9.0: %v", b.WGMMAError())
	}
	rng := rand.New(rand.NewPCG(16, 16))
	for _, s := range [][3]int{{129, 40, 72}, {200, 300, 200}, {300, 301, 1032}, {257, 4096, 576}, {2049, 512, 4096}} {
		m, n, k := s[0], s[1], s[2]
		xh := randomT(rng, tensor.F32, 1, m, k)
		wh, bh := randomT(rng, tensor.BF16, 1/math.Sqrt(float64(k)), n, k), randomT(rng, tensor.BF16, 1, n)
		x, w, bias := b.Upload(xh), b.Upload(wh), b.Upload(bh)
		want := linear(roundTo(f64s(xh), tensor.BF16), f64s(wh), f64s(bh), m, k, n)
		ys := map[bool]*tensor.Tensor{}
		for _, wg := range []bool{true, false} {
			ys[wg] = poison(b, m, n)
			b.WGMMAGEMM = wg
			func() { defer b.enter()(); b.gemm(dev(ys[wg]), dev(x), w, bias, m, n, k) }()
		}
		b.WGMMAGEMM = true
		got := back(b, ys[true])
		shape := fmt.Sprintf("M=%d N=%d K=%d", m, n, k)
		tensortest.Compare(t, "gemm_wgmma_bf16 "+shape+" (x rounded to bf16)", got, want, tensortest.F32)
		pipe := back(b, ys[false])
		ref := make([]float64, len(pipe))
		for i, v := range pipe {
			ref[i] = float64(v)
		}
		tensortest.Compare(t, "gemm_wgmma_bf16 against gemm_pipe_bf16 "+shape, got, ref, tensortest.F32)
	}
	const n, in, outQ, outKV = 200, 264, 300, 72
	x := b.Upload(randomT(rng, tensor.F32, 1, n, in))
	wq, wk, wv := b.Upload(randomT(rng, tensor.BF16, 0.1, outQ, in)), b.Upload(randomT(rng, tensor.BF16, 0.1, outKV, in)), b.Upload(randomT(rng, tensor.BF16, 0.1, outKV, in))
	bq := b.Upload(randomT(rng, tensor.BF16, 1, outQ))
	yq, yk, yv := poison(b, n, outQ), poison(b, n, outKV), poison(b, n, outKV)
	b.MatMulQKV(yq, yk, yv, x, wq, bq, wk, nil, wv, nil)
	for _, c := range []struct {
		name    string
		y, w, b *tensor.Tensor
	}{{"q", yq, wq, bq}, {"k", yk, wk, nil}, {"v", yv, wv, nil}} {
		want := poison(b, n, c.w.Rows())
		b.MatMul(want, x, c.w, c.b)
		if got, ref := back(b, c.y), back(b, want); !slices.Equal(got, ref) {
			t.Errorf("n=%d: MatMulQKV's %s (gemm_wgmma_bf16, one rounding of x) differs from MatMul's", n, c.name)
		}
	}
}

// MatMulQKV and MatMulSwiGLU at decode-batch row counts round x once for all their products
// (gemmShared): each product must equal MatMul's bit for bit, and the gated one silu(g)·u of
// MatMul's g and u within the f32 bound (the device's expf).
func TestGEMMSmallBatchSharedX(t *testing.T) {
	b := newBackend(t)
	rng := rand.New(rand.NewPCG(15, 15))
	const in, outQ, outKV, ffn = 264, 300, 72, 520
	for _, dt := range []tensor.DType{tensor.BF16, tensor.F16} {
		wq, wk, wv := b.Upload(randomT(rng, dt, 0.1, outQ, in)), b.Upload(randomT(rng, dt, 0.1, outKV, in)), b.Upload(randomT(rng, dt, 0.1, outKV, in))
		bq := b.Upload(randomT(rng, dt, 1, outQ))
		gate, up := b.Upload(randomT(rng, dt, 0.1, ffn, in)), b.Upload(randomT(rng, dt, 0.1, ffn, in))
		for _, n := range []int{9, 64, 128} {
			x := b.Upload(randomT(rng, tensor.F32, 1, n, in))
			yq, yk, yv := poison(b, n, outQ), poison(b, n, outKV), poison(b, n, outKV)
			b.MatMulQKV(yq, yk, yv, x, wq, bq, wk, nil, wv, nil)
			for _, c := range []struct {
				name    string
				y, w, b *tensor.Tensor
			}{{"q", yq, wq, bq}, {"k", yk, wk, nil}, {"v", yv, wv, nil}} {
				want := poison(b, n, c.w.Rows())
				b.MatMul(want, x, c.w, c.b)
				got, ref := back(b, c.y), back(b, want)
				for i := range got {
					if math.Float32bits(got[i]) != math.Float32bits(ref[i]) {
						t.Errorf("%s n=%d: MatMulQKV's %s differs from MatMul at %d: %g, %g", dt, n, c.name, i, got[i], ref[i])
						break
					}
				}
			}
			dst, tmp := poison(b, n, ffn), poison(b, n, ffn)
			b.MatMulSwiGLU(dst, tmp, x, gate, nil, up, nil)
			g, u := poison(b, n, ffn), poison(b, n, ffn)
			b.MatMul(g, x, gate, nil)
			b.MatMul(u, x, up, nil)
			gv, uv := back(b, g), back(b, u)
			want := make([]float64, len(gv))
			for i := range want {
				want[i] = float64(gv[i]) / (1 + math.Exp(-float64(gv[i]))) * float64(uv[i])
			}
			tensortest.Compare(t, fmt.Sprintf("%s n=%d: MatMulSwiGLU against MatMul's gate and up", dt, n), back(b, dst), want, tensortest.F32)
		}
	}
}

// splitKParts at the Llama-3.1-8B shapes on 132 SMs at 64 rows: one wave of blocks, ≥ 4 k tiles
// per split, and one split for the LM head.
func TestSplitKParts(t *testing.T) {
	for _, c := range []struct{ out, in, splits, kchunk int }{
		{4096, 4096, 8, 512}, {14336, 4096, 2, 2048}, {4096, 14336, 8, 1792}, {128256, 4096, 1, 4096}, {1024, 4096, 8, 512},
	} {
		splits, kchunk := splitKParts(64, c.out, c.in, 132)
		if splits != c.splits || kchunk != c.kchunk || splits*kchunk < c.in || (splits-1)*kchunk >= c.in {
			t.Errorf("splitKParts(64, %d, %d, 132) = %d splits of %d k, want %d of %d", c.out, c.in, splits, kchunk, c.splits, c.kchunk)
		}
	}
}

// The attention kernels against the CPU backend on one long prefill (the flash-style kernels'
// case: tiles of one sequence) with a small block size, at the head sizes of the models and odd
// ones (padding of D to 64/128/256): the f32 flash kernel (ExactAttention) and the split-KV
// kernels at the f32 bound, and where D ≤ 128 the tensor-core kernel at the bf16 one
// (TestAttentionPrefillMMA says why).
func TestAttentionKernels(t *testing.T) {
	b := newBackend(t)
	cpu := tensor.NewCPU(2)
	defer cpu.Close()
	rng := rand.New(rand.NewPCG(13, 13))
	for _, c := range []struct{ n, heads, kvHeads, dim, block int }{
		{100, 8, 2, 128, 16}, {70, 6, 2, 20, 3}, {33, 4, 4, 64, 16}, {40, 2, 1, 256, 8}, {64, 32, 8, 128, 16},
	} {
		kvg := tensor.NewKVCache(b, 1, c.kvHeads, c.dim, c.block, (c.n+c.block-1)/c.block+3)
		kvc := tensor.NewKVCache(cpu, 1, c.kvHeads, c.dim, c.block, (c.n+c.block-1)/c.block+3)
		// Take a block first so that the sequence's blocks are not the first ones.
		kvg.Reserve(1, 2*c.block)
		kvc.Reserve(1, 2*c.block)
		kvg.Reserve(0, c.n)
		kvc.Reserve(0, c.n)
		seq, pos := make([]int32, c.n), make([]int32, c.n)
		for i := range pos {
			pos[i] = int32(i)
		}
		k := randomT(rng, tensor.F32, 1, c.n, c.kvHeads, c.dim)
		v := randomT(rng, tensor.F32, 1, c.n, c.kvHeads, c.dim)
		q := randomT(rng, tensor.F32, 1, c.n, c.heads, c.dim)
		b.StoreKV(kvg, 0, b.Upload(k), b.Upload(v), seq, pos)
		cpu.StoreKV(kvc, 0, k, v, seq, pos)
		want := tensor.New(tensor.F32, c.n, c.heads*c.dim)
		cpu.Attention(want, q, kvc, 0, seq, pos)
		ref := f64s(want)
		what := fmt.Sprintf("n=%d heads=%d/%d D=%d block=%d", c.n, c.heads, c.kvHeads, c.dim, c.block)

		got := poison(b, c.n, c.heads*c.dim)
		b.ExactAttention = true
		b.Attention(got, b.Upload(q), kvg, 0, seq, pos) // the f32 prefill kernel (homogeneous tiles)
		tensortest.Compare(t, "attention prefill kernel "+what, back(b, got), ref, tensortest.F32)
		b.ExactAttention = false
		if usePrefillMMA(seq, c.dim, c.heads/c.kvHeads) {
			got = poison(b, c.n, c.heads*c.dim)
			b.Attention(got, b.Upload(q), kvg, 0, seq, pos)
			tensortest.Compare(t, "attention prefill tensor-core kernel "+what, back(b, got), ref, tensortest.BF16Inputs)
		}

		// The decode kernel on the same tokens, as Deterministic makes Attention use it for every one.
		got = poison(b, c.n, c.heads*c.dim)
		b.Deterministic = true
		b.Attention(got, b.Upload(q), kvg, 0, seq, pos)
		b.Deterministic = false
		tensortest.Compare(t, "attention decode kernel "+what, back(b, got), ref, tensortest.F32)

		// And over a BF16 cache: the same bound against the CPU on the rounded keys and values.
		kvb := tensor.NewKVCacheOf(b, tensor.BF16, 1, c.kvHeads, c.dim, c.block, (c.n+c.block-1)/c.block+3)
		kvr := tensor.NewKVCache(cpu, 1, c.kvHeads, c.dim, c.block, (c.n+c.block-1)/c.block+3)
		kvb.Reserve(0, c.n)
		kvr.Reserve(0, c.n)
		b.StoreKV(kvb, 0, b.Upload(k), b.Upload(v), seq, pos)
		cpu.StoreKV(kvr, 0, k.Convert(tensor.BF16).Convert(tensor.F32), v.Convert(tensor.BF16).Convert(tensor.F32), seq, pos)
		cpu.Attention(want, q, kvr, 0, seq, pos)
		got = poison(b, c.n, c.heads*c.dim)
		b.Attention(got, b.Upload(q), kvb, 0, seq, pos)
		tensortest.Compare(t, "attention over a bf16 cache "+what, back(b, got), f64s(want), tensortest.F32)
	}
}

// The tensor-core prefill attention against the CPU backend: token counts that are not multiples
// of a block's 64 rows, prefixes already in the cache (a prompt in two chunks: the second attends
// over the first), GQA groups of 1–4 and one that does not divide 64 (3), D of 128, 64 and one
// padded (40), and a paged cache whose blocks are taken out of order. Every row past the last
// query is a padding row that must not be written; the output is poisoned before each run.
//
// Bound: q, k, v and the softmax weights are rounded to bf16 (relative 2⁻⁹ each), everything else
// is f32. For unit-variance inputs a score moves by ~2⁻⁹·|s| and an output, a weighted mean of
// values, by at most 2⁻⁹·max |v| ≈ 8e-3 and typically far less: tensortest.BF16Inputs (1e-2 +
// 1e-2·|want|). A fragment-layout slip gives errors of order 1.
func TestAttentionPrefillMMA(t *testing.T) {
	b := newBackend(t)
	cpu := tensor.NewCPU(2)
	defer cpu.Close()
	rng := rand.New(rand.NewPCG(15, 15))
	for _, c := range []struct{ n, prefix, heads, kvHeads, dim, block int }{
		{515, 0, 32, 8, 128, 16}, {131, 0, 8, 2, 128, 16}, {77, 0, 6, 2, 64, 5}, {45, 19, 4, 4, 64, 8},
		{100, 37, 9, 3, 128, 16}, {17, 0, 4, 1, 40, 3}, {250, 70, 32, 8, 128, 16},
	} {
		total := c.prefix + c.n
		nblk := (total+c.block-1)/c.block + 3
		kvg := tensor.NewKVCache(b, 1, c.kvHeads, c.dim, c.block, nblk)
		kvc := tensor.NewKVCache(cpu, 1, c.kvHeads, c.dim, c.block, nblk)
		// Another sequence takes blocks first and again halfway, so this one's are not in order.
		for _, kv := range []*tensor.KVCache{kvg, kvc} {
			kv.Reserve(1, 2*c.block)
			kv.Reserve(0, total/2)
			kv.Reserve(1, 3*c.block)
			kv.Reserve(0, total)
		}
		// The prefix as an earlier StoreKV, then the chunk's own keys and values.
		all, allPos := make([]int32, total), make([]int32, total)
		for i := range allPos {
			allPos[i] = int32(i)
		}
		k := randomT(rng, tensor.F32, 1, total, c.kvHeads, c.dim)
		v := randomT(rng, tensor.F32, 1, total, c.kvHeads, c.dim)
		b.StoreKV(kvg, 0, b.Upload(k), b.Upload(v), all, allPos)
		cpu.StoreKV(kvc, 0, k, v, all, allPos)
		seq, pos := all[:c.n], allPos[c.prefix:]
		q := randomT(rng, tensor.F32, 1, c.n, c.heads, c.dim)
		want := tensor.New(tensor.F32, c.n, c.heads*c.dim)
		cpu.Attention(want, q, kvc, 0, seq, pos)
		what := fmt.Sprintf("n=%d after %d, heads=%d/%d D=%d block=%d", c.n, c.prefix, c.heads, c.kvHeads, c.dim, c.block)
		if !usePrefillMMA(seq, c.dim, c.heads/c.kvHeads) {
			t.Fatalf("%s: the tensor-core kernel does not apply", what)
		}
		got := poison(b, c.n*c.heads*c.dim+64)
		func() {
			defer b.enter()()
			ctx, table, maxBlocks := blockTables(kvg, seq, pos)
			cd := b.ints(ctx, table)
			b.attentionPrefillMMA(dev(got), dev(b.Upload(q)), dev(kvg.K[0]), dev(kvg.V[0]), cd, cd+uint64(4*len(ctx)),
				c.n, maxBlocks, c.block, c.heads, c.kvHeads, c.dim, float32(1/math.Sqrt(float64(c.dim))))
		}()
		out := back(b, got)
		tensortest.Compare(t, "attention_prefill_mma "+what, out[:c.n*c.heads*c.dim], f64s(want), tensortest.BF16Inputs)
		for i, x := range out[c.n*c.heads*c.dim:] {
			if !math.IsNaN(float64(x)) {
				t.Fatalf("%s: wrote %g past the output at +%d", what, x, i)
			}
		}
		if c.dim%8 != 0 {
			continue
		}
		// The pipelined kernel over the same keys and values in a BF16 cache (through Attention):
		// the same arithmetic on the same bf16 operands, so the f32-cache kernel's bits.
		kvb := tensor.NewKVCacheOf(b, tensor.BF16, 1, c.kvHeads, c.dim, c.block, nblk)
		kvb.Reserve(1, 2*c.block)
		kvb.Reserve(0, total/2)
		kvb.Reserve(1, 3*c.block)
		kvb.Reserve(0, total)
		b.StoreKV(kvb, 0, b.Upload(k), b.Upload(v), all, allPos)
		fa := poison(b, c.n, c.heads*c.dim)
		b.Attention(fa, b.Upload(q), kvb, 0, seq, pos)
		if gotFA := back(b, fa); !slices.Equal(gotFA, out[:c.n*c.heads*c.dim]) {
			tensortest.Compare(t, "attention_prefill_fa_kvbf16 "+what, gotFA, f64s(want), tensortest.BF16Inputs)
			t.Errorf("attention_prefill_fa_kvbf16 %s: not attention_prefill_mma's output bit for bit", what)
		}
	}
}

// The fused residual add, steering rows and norm against the f64 formula, steered and not.
func TestResidualRMSNorm(t *testing.T) {
	b := newBackend(t)
	rng := rand.New(rand.NewPCG(14, 14))
	const n, d, eps = 3, 4096, 1e-5
	for _, dt := range []tensor.DType{tensor.F32, tensor.BF16, tensor.F16} {
		for _, steer := range []bool{false, true} {
			x := randomT(rng, tensor.F32, 2, n, d)
			delta := randomT(rng, tensor.F32, 1, n, d)
			w := randomT(rng, dt, 1, d)
			sv := randomT(rng, tensor.F32, 1, n, d)
			resid := b.Upload(x)
			dst := poison(b, n, d)
			var sd *tensor.Tensor
			if steer {
				sd = b.Upload(sv)
			}
			b.ResidualRMSNorm(dst, resid, b.Upload(delta), sd, b.Upload(w), eps)
			xs, ds, ws, ss := f64s(x), f64s(delta), f64s(w), f64s(sv)
			wantR := make([]float64, n*d)
			want := make([]float64, n*d)
			for i := 0; i < n; i++ {
				var sum float64
				for k := 0; k < d; k++ {
					r := xs[i*d+k] + ds[i*d+k]
					if steer {
						r += ss[i*d+k]
					}
					wantR[i*d+k] = r
					sum += r * r
				}
				s := 1 / math.Sqrt(sum/d+eps)
				for k := 0; k < d; k++ {
					want[i*d+k] = wantR[i*d+k] * s * ws[k]
				}
			}
			what := fmt.Sprintf("residual rmsnorm %s steer=%v", dt, steer)
			tensortest.Compare(t, what+" (resid)", back(b, resid), wantR, tensortest.F32)
			tensortest.Compare(t, what+" (normed)", back(b, dst), want, tensortest.F32)
		}
	}
}

// Argmax picks the largest value and, on a tie, the lowest index, as llama's CPU sampler does.
func TestArgmax(t *testing.T) {
	b := newBackend(t)
	rng := rand.New(rand.NewPCG(15, 15))
	const rows, d = 4, 128256
	x := randomT(rng, tensor.F32, 1, rows, d)
	v := x.F32()
	v[0*d+77777] = 50
	v[1*d+5], v[1*d+100000] = 60, 60 // tie: 5 wins
	v[2*d+d-1] = 70
	v[3*d+0] = 80
	out := b.Alloc(tensor.I32, rows)
	b.Argmax(out, b.Upload(x))
	h := tensor.New(tensor.I32, rows)
	b.Download(h, out)
	if got, want := fmt.Sprint(h.I32()), "[77777 5 128255 0]"; got != want {
		t.Errorf("argmax = %s, want %s", got, want)
	}
}

// A captured graph replays the launches it recorded, reading its buffers as they are at replay.
func TestGraph(t *testing.T) {
	b := newBackend(t)
	b.SyncEachOp = false
	a := b.Upload(tensor.FromF32([]float32{1, 2, 3}, 3))
	one := b.Upload(tensor.FromF32([]float32{1, 1, 1}, 3))
	b.Add(a, a, one) // loads the module before capture
	g, err := b.Capture(func() { b.Add(a, a, one) })
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	for i := 0; i < 5; i++ {
		if err := g.Launch(); err != nil {
			t.Fatal(err)
		}
	}
	if got := fmt.Sprint(back(b, a)); got != "[7 8 9]" {
		t.Errorf("after 1 add and 5 replays of one: %s, want [7 8 9]", got)
	}
}
