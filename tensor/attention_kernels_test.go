package tensor

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// The attention kernels of every set this CPU runs, against f64 sums over rows scattered through
// a cache as a paged one scatters them:
//
//   - scores: a dot of d terms times the scale, with dotTol's bound (the kernels keep 16 lanes and
//     add them with a tree: at most d/16 + 4 roundings);
//   - mix: a sum of n products in order of t (one rounding per term): (n + 1)·u·Σ|p_t·v_t|;
//   - softmax: against e^(x − max) with x − max in F32 (every F32 softmax rounds it so): the vector
//     exp is within 2 ulp, the sum adds n/16 + 4 roundings and the product one: 8·u relative, plus
//     the sum's (n/16 + 4)·u.
//
// Head sizes that are no multiple of 16 run the portable kernels; the odd ones here check that
// they are sent there.

// cacheOf makes a cache of rows rows of width elements with the given values in F32 or BF16, and
// the exact F32 value of every element.
func cacheOf(rng *rand.Rand, dt DType, rows, width int) (f32 []float32, u16 []uint16, val []float32) {
	val = make([]float32, rows*width)
	for i := range val {
		val[i] = float32(rng.NormFloat64())
	}
	w := newWeights(dt, val)
	return w.f32, w.u16, w.val
}

// scatteredRows returns n row offsets (times width, plus head) in a random order over rows rows,
// padded to a multiple of 16 with the first, as cacheRows pads them.
func scatteredRows(rng *rand.Rand, n, rows, width int) []int {
	perm := rng.Perm(rows)
	off := make([]int, roundKeys(n))
	for t := range off {
		off[t] = perm[min(t, n-1)%rows] * width
		if t >= n {
			off[t] = off[0]
		}
	}
	return off
}

// attnCache makes a cache of 3 kv heads of d and a few rows more than n, and picks a kv head and
// n scattered rows of it: the kernels' k or v (from the kv head on), the values of the whole cache,
// the kv head's offset in a row and the rows' offsets.
func attnCache(rng *rand.Rand, dt DType, d, n int) (f32 []float32, u16 []uint16, val []float32, head int, off []int) {
	const heads = 3
	rows, width := n+7, heads*d
	f32, u16, val = cacheOf(rng, dt, rows, width)
	head = rng.IntN(heads) * d
	if f32 != nil {
		f32 = f32[head:]
	} else {
		u16 = u16[head:]
	}
	return f32, u16, val, head, scatteredRows(rng, n, rows, width)
}

var attnHeadSizes = []int{16, 48, 64, 80, 128, 24, 100}
var attnKeyCounts = []int{1, 2, 15, 16, 17, 33, 64, 100, 257}
var attnQueryCounts = []int{1, 2, 3, 4, 5, 9}

func randomF32(rng *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64())
	}
	return v
}

func nanF32(n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(math.NaN())
	}
	return v
}

// scoresOf runs k's scores kernel for the cache dtype dt.
func scoresOf(k *kernels, dt DType, s []float32, lds int, q []float32, d int, f32 []float32, u16 []uint16, off []int, n int, scale float32) {
	if dt == BF16 {
		k.attnScoresBF16(s, lds, q, d, u16, off, n, scale)
	} else {
		k.attnScoresF32(s, lds, q, d, f32, off, n, scale)
	}
}

func mixOf(k *kernels, dt DType, out []float32, d int, p []float32, ldp int, f32 []float32, u16 []uint16, off []int, n int) {
	if dt == BF16 {
		k.attnMixBF16(out, d, p, ldp, u16, off, n)
	} else {
		k.attnMixF32(out, d, p, ldp, f32, off, n)
	}
}

func TestAttentionScoresKernel(t *testing.T) {
	forKernels(t, func(t *testing.T, k *kernels) {
		rng := rand.New(rand.NewPCG(5, 6))
		for _, dt := range []DType{F32, BF16} {
			for _, d := range attnHeadSizes {
				for _, n := range attnKeyCounts {
					nq := attnQueryCounts[rng.IntN(len(attnQueryCounts))]
					f32, u16, val, head, off := attnCache(rng, dt, d, n)
					q := randomF32(rng, nq*d)
					scale := float32(1 / math.Sqrt(float64(d)))
					lds := n + 5
					s := nanF32(nq * lds)
					scoresOf(k, dt, s, lds, q, d, f32, u16, off, n, scale)
					name := fmt.Sprintf("%s d=%d n=%d queries=%d", dt, d, n, nq)
					for j := range nq {
						for i := n; i < lds; i++ {
							if !math.IsNaN(float64(s[j*lds+i])) {
								t.Fatalf("%s: query %d: wrote score %d past the %d keys", name, j, i, n)
							}
						}
						for i := 0; i < n; i++ {
							var want, abs float64
							row := val[head+off[i]:]
							for e := 0; e < d; e++ {
								want += float64(q[j*d+e]) * float64(row[e])
								abs += math.Abs(float64(q[j*d+e]) * float64(row[e]))
							}
							want *= float64(scale)
							tol := dotTol(d, abs*float64(scale), want) + unit*math.Abs(want)
							if got := float64(s[j*lds+i]); math.Abs(got-want) > tol {
								t.Fatalf("%s: query %d score %d is %g, want %g (tolerance %g)", name, j, i, got, want, tol)
							}
						}
						// The same query alone gives the same bits: no query depends on the others.
						alone := make([]float32, n)
						scoresOf(k, dt, alone, n, q[j*d:(j+1)*d], d, f32, u16, off, n, scale)
						for i := range alone {
							if math.Float32bits(alone[i]) != math.Float32bits(s[j*lds+i]) {
								t.Fatalf("%s: query %d score %d is %g with the others, %g alone", name, j, i, s[j*lds+i], alone[i])
							}
						}
					}
				}
			}
		}
	})
}

// A key's score is the same bits wherever it sits in a block of 16: each result depends only on
// its own query and row, so a token's attention does not depend on the batch around it.
func TestAttentionScoresKernelSlotInvariant(t *testing.T) {
	forKernels(t, func(t *testing.T, k *kernels) {
		rng := rand.New(rand.NewPCG(7, 8))
		const d, rows = 64, 40
		f32, _, _ := cacheOf(rng, F32, rows, d)
		q := randomF32(rng, d)
		off := scatteredRows(rng, rows, rows, d)
		all := make([]float32, rows)
		k.attnScoresF32(all, rows, q, d, f32, off, rows, 0.125)
		for i := range rows {
			alone := make([]float32, 1)
			k.attnScoresF32(alone, 1, q, d, f32, []int{off[i], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 1, 0.125)
			if math.Float32bits(alone[0]) != math.Float32bits(all[i]) {
				t.Fatalf("key %d: %g alone, %g in a block", i, alone[0], all[i])
			}
		}
	})
}

func TestAttentionMixKernel(t *testing.T) {
	forKernels(t, func(t *testing.T, k *kernels) {
		rng := rand.New(rand.NewPCG(9, 10))
		for _, dt := range []DType{F32, BF16} {
			for _, d := range attnHeadSizes {
				for _, n := range attnKeyCounts {
					nq := attnQueryCounts[rng.IntN(len(attnQueryCounts))]
					f32, u16, val, head, off := attnCache(rng, dt, d, n)
					ldp := n + 3
					p := make([]float32, nq*ldp)
					for i := range p {
						p[i] = rng.Float32()
					}
					out := nanF32(nq*d + 16)
					mixOf(k, dt, out[:nq*d], d, p, ldp, f32, u16, off, n)
					name := fmt.Sprintf("%s d=%d n=%d queries=%d", dt, d, n, nq)
					for i := nq * d; i < len(out); i++ {
						if !math.IsNaN(float64(out[i])) {
							t.Fatalf("%s: wrote element %d past the %d rows of %d", name, i, nq, d)
						}
					}
					for j := range nq {
						for e := 0; e < d; e++ {
							var want, abs float64
							for i := 0; i < n; i++ {
								v := float64(val[head+off[i]+e])
								want += float64(p[j*ldp+i]) * v
								abs += math.Abs(float64(p[j*ldp+i]) * v)
							}
							tol := float64(n+1) * unit * abs
							if got := float64(out[j*d+e]); math.Abs(got-want) > tol {
								t.Fatalf("%s: query %d element %d is %g, want %g (tolerance %g)", name, j, e, got, want, tol)
							}
						}
						alone := make([]float32, d)
						mixOf(k, dt, alone, d, p[j*ldp:], ldp, f32, u16, off, n)
						for e := range alone {
							if math.Float32bits(alone[e]) != math.Float32bits(out[j*d+e]) {
								t.Fatalf("%s: query %d element %d is %g with the others, %g alone", name, j, e, out[j*d+e], alone[e])
							}
						}
					}
				}
			}
		}
	})
}

func TestSoftmaxKernel(t *testing.T) {
	forKernels(t, func(t *testing.T, k *kernels) {
		rng := rand.New(rand.NewPCG(11, 12))
		for _, n := range []int{1, 2, 15, 16, 17, 31, 100, 1000} {
			for _, spread := range []float64{0.01, 1, 30, 300} {
				x := make([]float32, n+16)
				for i := range x {
					x[i] = float32(rng.NormFloat64() * spread)
				}
				if n > 3 {
					x[2] = float32(math.Inf(-1)) // a masked score: exactly 0
				}
				// e^(x − max) with x − max rounded to F32, as every F32 softmax rounds it.
				want := make([]float64, n)
				m := float32(math.Inf(-1))
				for _, v := range x[:n] {
					m = max(m, v)
				}
				var sum float64
				for i, v := range x[:n] {
					want[i] = math.Exp(float64(v - m))
					sum += want[i]
				}
				tail := append([]float32(nil), x[n:]...)
				k.softmaxF32(x[:n])
				for i := range tail {
					if math.Float32bits(x[n+i]) != math.Float32bits(tail[i]) {
						t.Fatalf("n=%d: wrote element %d past the row", n, n+i)
					}
				}
				tol := (8 + float64(n)/16 + 4) * unit
				for i := range want {
					want[i] /= sum
					if got := float64(x[i]); math.Abs(got-want[i]) > tol*want[i]+0x1p-148 { // two subnormal steps
						t.Fatalf("n=%d spread %g: p[%d] = %g, want %g (relative error %.3g)", n, spread, i, got, want[i], math.Abs(got-want[i])/want[i])
					}
				}
			}
		}
	})
}

// The vector exp over the range softmax feeds it, x − max <= 0, through softmax([0, x]): within
// 4 units of 2⁻²⁴ where the result is normal, and the right subnormals and zeros below.
func TestSoftmaxKernelExp(t *testing.T) {
	forKernels(t, func(t *testing.T, k *kernels) {
		var worst float64
		for _, x := range expSamples() {
			// softmax([0, x]) = [1/(1+e^x), e^x/(1+e^x)], x <= 0.
			v := []float32{0, x}
			k.softmaxF32(v)
			want := math.Exp(float64(x)) / (1 + math.Exp(float64(x)))
			got := float64(v[1])
			if want < 0x1p-126 {
				if math.Abs(got-want) > 0x1p-149 {
					t.Fatalf("exp(%g): p = %g, want %g", x, got, want)
				}
				continue
			}
			worst = math.Max(worst, math.Abs(got-want)/want/unit)
		}
		if worst > 4 {
			t.Errorf("worst relative error of softmax([0, x]) is %.2f units of 2⁻²⁴, want <= 4", worst)
		}
	})
}

func expSamples() []float32 {
	var xs []float32
	for x := -110.0; x <= 0; x += 0.0137 {
		xs = append(xs, float32(x))
	}
	return append(xs, 0, -1e-30, float32(math.Inf(-1)), -87.3, -103.9, -104.1)
}

// The SwiGLU gate of every kernel set against silu(g)·u in f64: the vector exp adds 2 ulp to e⁻ᵍ,
// which 1 + e⁻ᵍ and the division and product carry with three roundings of their own: 8·u.
func TestSiLUMulKernel(t *testing.T) {
	forKernels(t, func(t *testing.T, k *kernels) {
		rng := rand.New(rand.NewPCG(13, 14))
		for _, n := range []int{0, 1, 15, 16, 17, 100, 1537} {
			g, u := make([]float32, n), make([]float32, n)
			for i := range g {
				g[i] = float32(rng.NormFloat64() * 4)
				u[i] = float32(rng.NormFloat64())
			}
			if n > 4 {
				g[0], g[1], g[2], g[3] = -100, 100, -1e-30, float32(math.Inf(1))
			}
			out := make([]float32, n+16)
			for i := range out {
				out[i] = float32(math.NaN())
			}
			k.siluMulF32(out[:n], g, u)
			for i := n; i < len(out); i++ {
				if !math.IsNaN(float64(out[i])) {
					t.Fatalf("n=%d: wrote element %d past the row", n, i)
				}
			}
			for i := range g {
				// e⁻ᵍ in F32, which overflows to +Inf for g < -88.7 and makes the result ∓0.
				x := float64(g[i])
				want := x / (1 + float64(float32(math.Exp(-x)))) * float64(u[i])
				if got := float64(out[i]); got != want && math.Abs(got-want) > 8*unit*math.Abs(want)+0x1p-148 {
					t.Fatalf("n=%d: silu(%g)·%g = %g, want %g", n, g[i], u[i], got, want)
				}
			}
		}
	})
}

// A token's attention is the same bits whether it runs in a large batch (items of a whole query
// group) or alone, as a decode step does (items of one query head), over a paged cache, with a
// head size the vector kernels take and an odd one, and with an F32 and a BF16 cache. With 9
// heads in 3 groups on 2 threads, a decode step's workers split a group: each runs its part of
// the group as one item.
func TestAttentionBatchInvariant(t *testing.T) {
	b := NewCPU(2)
	defer b.Close()
	rng := rand.New(rand.NewPCG(29, 30))
	const n = 21
	for _, shape := range [][2]int{{6, 2}, {9, 3}} {
		testAttentionBatchInvariant(t, b, rng, shape[0], shape[1], n)
	}
}

func testAttentionBatchInvariant(t *testing.T, b *CPU, rng *rand.Rand, heads, kvHeads, n int) {
	for _, d := range []int{64, 10} {
		for _, cache := range []DType{F32, BF16} {
			kv := NewKVCacheOf(b, cache, 1, kvHeads, d, 4, 16)
			if err := kv.Reserve(0, n); err != nil {
				t.Fatal(err)
			}
			seq, pos := make([]int32, n), make([]int32, n)
			for i := range pos {
				pos[i] = int32(i)
			}
			b.StoreKV(kv, 0, FromF32(randomF32(rng, n*kvHeads*d), n, kvHeads, d), FromF32(randomF32(rng, n*kvHeads*d), n, kvHeads, d), seq, pos)
			q := randomF32(rng, n*heads*d)
			all := New(F32, n, heads*d)
			b.Attention(all, FromF32(q, n, heads, d), kv, 0, seq, pos)
			for i := range n {
				one := New(F32, 1, heads*d)
				b.Attention(one, FromF32(q[i*heads*d:(i+1)*heads*d], 1, heads, d), kv, 0, seq[i:i+1], pos[i:i+1])
				for e, v := range one.F32() {
					if w := all.F32()[i*heads*d+e]; math.Float32bits(v) != math.Float32bits(w) {
						t.Fatalf("%d heads, %d kv heads, d=%d, %s cache: token %d element %d is %g alone, %g in the batch", heads, kvHeads, d, cache, i, e, v, w)
					}
				}
			}
		}
	}
}

// A decode step over a long context splits its attention across the workers (attentionSplit):
// scores in blocks of keys, each softmax whole, the mix in slices of the head's elements. Its
// result must be the bits of the same token's row in a batch large enough to run unsplit, for
// one token and for two tokens of different sequences (one of them under splitMin), on 2 and 3
// threads, GQA groups of 1 to 4, head sizes whose mix slices are 64, 32 and 16 elements, and an
// F32, a BF16 and an F64 cache (F64 activations).
func TestAttentionSplitInvariant(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	const n = 700
	// of makes a tensor of the activations' dtype (F64 with an F64 cache, else F32).
	of := func(cache DType, v []float32, shape ...int) *Tensor {
		if cache != F64 {
			return FromF32(v, shape...)
		}
		w := make([]float64, len(v))
		for i, x := range v {
			w[i] = float64(x)
		}
		return FromF64(w, shape...)
	}
	values := func(x *Tensor) []float64 {
		if x.DType == F64 {
			return x.F64()
		}
		out := make([]float64, x.Numel())
		for i, v := range x.F32() {
			out[i] = float64(v)
		}
		return out
	}
	for _, threads := range []int{2, 3} {
		b := NewCPU(threads)
		for _, shape := range [][3]int{{9, 3, 64}, {8, 2, 128}, {4, 4, 32}, {8, 1, 64}} {
			heads, kvHeads, d := shape[0], shape[1], shape[2]
			for _, cache := range []DType{F32, BF16, F64} {
				act := F32
				if cache == F64 {
					act = F64
				}
				kv := NewKVCacheOf(b, cache, 1, kvHeads, d, 16, 2*n/16+2)
				q := make([][]float32, 2)
				full := make([][]float64, 2) // each sequence's rows from a batch of all its positions
				for s := range 2 {
					if err := kv.Reserve(s, n); err != nil {
						t.Fatal(err)
					}
					seq, pos := make([]int32, n), make([]int32, n)
					for i := range pos {
						seq[i], pos[i] = int32(s), int32(i)
					}
					b.StoreKV(kv, 0, of(cache, randomF32(rng, n*kvHeads*d), n, kvHeads, d), of(cache, randomF32(rng, n*kvHeads*d), n, kvHeads, d), seq, pos)
					q[s] = randomF32(rng, n*heads*d)
					all := New(act, n, heads*d)
					b.Attention(all, of(cache, q[s], n, heads, d), kv, 0, seq, pos)
					full[s] = values(all)
				}
				row := func(s, p int) []float32 { return q[s][p*heads*d : (p+1)*heads*d] }
				for _, step := range [][2]int{{255, -1}, {256, -1}, {300, -1}, {699, -1}, {511, 100}, {640, 699}} {
					toks := []int{step[0]}
					if step[1] >= 0 {
						toks = append(toks, step[1])
					}
					var qs []float32
					var seq, pos []int32
					for s, p := range toks {
						qs = append(qs, row(s, p)...)
						seq, pos = append(seq, int32(s)), append(pos, int32(p))
					}
					out := New(act, len(toks), heads*d)
					b.Attention(out, of(cache, qs, len(toks), heads, d), kv, 0, seq, pos)
					got := values(out)
					for s, p := range toks {
						want := full[s][p*heads*d : (p+1)*heads*d]
						for e, w := range want {
							if v := got[s*heads*d+e]; math.Float64bits(v) != math.Float64bits(w) {
								t.Fatalf("%d threads, %d heads, %d kv heads, d=%d, %s cache, step %v: sequence %d position %d element %d is %g, unsplit %g",
									threads, heads, kvHeads, d, cache, toks, s, p, e, v, w)
							}
						}
					}
				}
			}
		}
		b.Close()
	}
}
