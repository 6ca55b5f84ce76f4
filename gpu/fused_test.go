//go:build cuda

package gpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/tensor"
	"github.com/tillerlm/tiller/tensor/tensortest"
)

// The kernels of the fused decode step (kernels/matvec.cu, kernels/decode.cu) need compute
// capability 9.0 (programmatic dependent launch); the tests skip below it.
func needSM90(t *testing.T, b *Backend) {
	t.Helper()
	if b.cc < 90 {
		t.Skipf("compute capability %d.%d: the split-K and fused decode kernels are compiled for 9.0", b.cc/10, b.cc%10)
	}
}

// The split-K GEMV against the f64 reference, as TestGEMV: every token count, 16-byte rows and
// not (in = 67, and a partial last step at 264 and 9000), three segments in one launch, the
// SwiGLU form; then the forms that fold the residual add and RMSNorm in (one token), with and
// without the delta and the residual write-back. All compute in f32 from exact weights: the f32
// bound.
func TestMatVec(t *testing.T) {
	b := newBackend(t)
	needSM90(t, b)
	rng := rand.New(rand.NewPCG(21, 21))
	for _, dt := range []tensor.DType{tensor.F32, tensor.BF16, tensor.F16} {
		for _, s := range [][2]int{{4096, 50}, {264, 33}, {67, 20}, {9000, 17}, {14336, 9}} {
			in := s[0]
			outs := []int{s[1], 16, 7}
			ws := make([]*tensor.Tensor, 3)
			bs := make([]*tensor.Tensor, 3)
			wd := make([]*tensor.Tensor, 3)
			bd := make([]*tensor.Tensor, 3)
			for j, out := range outs {
				ws[j] = randomT(rng, dt, 1/math.Sqrt(float64(in)), out, in)
				wd[j] = b.Upload(ws[j])
				if j != 1 {
					bs[j] = randomT(rng, dt, 1, out)
					bd[j] = b.Upload(bs[j])
				}
			}
			bias := func(j int) []float64 {
				if bs[j] == nil {
					return nil
				}
				return f64s(bs[j])
			}
			up := randomT(rng, dt, 1/math.Sqrt(float64(in)), outs[0], in)
			upd := b.Upload(up)
			swiglu := func(x []float64, n int) []float64 {
				g := linear(x, f64s(ws[0]), bias(0), n, in, outs[0])
				u := linear(x, f64s(up), nil, n, in, outs[0])
				for i := range g {
					g[i] = g[i] / (1 + math.Exp(-g[i])) * u[i]
				}
				return g
			}

			for _, n := range []int{1, 2, 3, 5, 8} {
				x := randomT(rng, tensor.F32, 1, n, in)
				xd := b.Upload(x)
				ys := []*tensor.Tensor{poison(b, n, outs[0]), poison(b, n, outs[1]), poison(b, n, outs[2])}
				segs := []gemvSeg{{w: wd[0], bias: bd[0], y: dev(ys[0])}, {w: wd[1], bias: bd[1], y: dev(ys[1])}, {w: wd[2], bias: bd[2], y: dev(ys[2])}}
				func() { defer b.enter()(); b.matvec(dev(xd), n, in, nil, segs...) }()
				for j, out := range outs {
					want := linear(f64s(x), f64s(ws[j]), bias(j), n, in, out)
					tensortest.Compare(t, fmt.Sprintf("matvec %s n=%d in=%d segment %d out=%d", dt, n, in, j, out), back(b, ys[j]), want, tensortest.F32)
				}
				y := poison(b, n, outs[0])
				func() { defer b.enter()(); b.matvecSwiGLU(dev(y), dev(xd), n, in, nil, wd[0], bd[0], upd, nil) }()
				tensortest.Compare(t, fmt.Sprintf("matvec swiglu %s n=%d in=%d", dt, n, in), back(b, y), swiglu(f64s(x), n), tensortest.F32)
			}

			// The norm forms: v = x + xb (+ alpha·steer, the *_steer_* kernels); y = rmsnorm(v) ⊙ wn · Wᵀ
			// + bias; xout = v.
			const eps = 1e-5
			wv := make([]float32, in) // norm weights around 1, as trained ones are
			for i := range wv {
				wv[i] = float32(1 + 0.3*rng.NormFloat64())
			}
			wn := tensor.FromF32(wv, in).Convert(dt)
			wnd := b.Upload(wn)
			for _, form := range []struct{ withDelta, withSteer bool }{{false, false}, {true, false}, {true, true}, {false, true}} {
				withDelta := form.withDelta
				x := randomT(rng, tensor.F32, 2, 1, in)
				xb := randomT(rng, tensor.F32, 1, 1, in)
				steer := randomT(rng, tensor.F32, 1, 1, in)
				const alpha = -1.75
				xd, xbd, steerd := b.Upload(x), b.Upload(xb), b.Upload(steer)
				alphad := b.Upload(tensor.FromF32([]float32{alpha}, 1))
				v := f64s(x)
				if withDelta {
					for k, d := range f64s(xb) {
						v[k] += d
					}
				}
				if form.withSteer {
					for k, s := range f64s(steer) {
						v[k] += alpha * s
					}
				}
				var ss float64
				for _, e := range v {
					ss += e * e
				}
				scale := 1 / math.Sqrt(ss/float64(in)+eps)
				u := make([]float64, in)
				for k, w := range f64s(wn) {
					u[k] = v[k] * scale * w
				}
				norm := &matvecNorm{w: wnd, eps: eps}
				if withDelta {
					norm.xb = dev(xbd)
				}
				if form.withSteer {
					norm.alpha, norm.steer = dev(alphad), dev(steerd)
				}
				what := fmt.Sprintf("%s in=%d delta=%v steer=%v", dt, in, withDelta, form.withSteer)

				xout := poison(b, 1, in)
				norm.xout = dev(xout)
				ys := []*tensor.Tensor{poison(b, 1, outs[0]), poison(b, 1, outs[1]), poison(b, 1, outs[2])}
				segs := []gemvSeg{{w: wd[0], bias: bd[0], y: dev(ys[0])}, {w: wd[1], bias: bd[1], y: dev(ys[1])}, {w: wd[2], bias: bd[2], y: dev(ys[2])}}
				func() { defer b.enter()(); b.matvec(dev(xd), 1, in, norm, segs...) }()
				for j, out := range outs {
					tensortest.Compare(t, fmt.Sprintf("matvec rms %s segment %d", what, j), back(b, ys[j]), linear(u, f64s(ws[j]), bias(j), 1, in, out), tensortest.F32)
				}
				tensortest.Compare(t, "matvec rms (residual written back) "+what, back(b, xout), v, tensortest.F32)

				y := poison(b, 1, outs[0])
				xout = poison(b, 1, in)
				norm.xout = dev(xout)
				func() { defer b.enter()(); b.matvecSwiGLU(dev(y), dev(xd), 1, in, norm, wd[0], bd[0], upd, nil) }()
				tensortest.Compare(t, "matvec rms swiglu "+what, back(b, y), swiglu(u, 1), tensortest.F32)
				tensortest.Compare(t, "matvec rms swiglu (residual written back) "+what, back(b, xout), v, tensortest.F32)

				// Without the write-back (the LM head's form), launched with programmatic
				// dependent launch behind the previous kernel: the same result.
				y = poison(b, 1, outs[0])
				norm.xout = 0
				func() {
					defer b.enter()()
					b.pdl = true
					defer func() { b.pdl = false }()
					b.matvec(dev(xd), 1, in, norm, gemvSeg{w: wd[0], bias: bd[0], y: dev(y)})
				}()
				tensortest.Compare(t, "matvec rms (no write-back, PDL) "+what, back(b, y), linear(u, f64s(ws[0]), bias(0), 1, in, outs[0]), tensortest.F32)
			}
		}
	}
}

// The decode step's attention (RoPE of q and k, the cache append and the decode attention in one
// launch) against the CPU's RoPE, StoreKV and Attention, for a batch of rows of different
// sequences and positions — one idle — over F32 and BF16 caches: the outputs, the cache rows it
// writes, a second launch (the counters reset) and each row alone against the batch, bit for bit.
// Positions cover one chunk (≤ 64), chunks of 64 and of 128 (past 2048), pos 0, GQA groups of
// 1–12 (12: two blocks of heads), odd head sizes and blocks the sequences hold out of order. The
// BF16 reference stores the keys and values rounded to bf16 into the CPU's F32 cache.
func TestAttentionDecodeRoPE(t *testing.T) {
	b := newBackend(t)
	needSM90(t, b)
	cpu := tensor.NewCPU(2)
	defer cpu.Close()
	rng := rand.New(rand.NewPCG(22, 22))
	for _, c := range []struct {
		heads, kvHeads, dim, block int
		pos                        []int32
	}{
		{8, 2, 128, 16, []int32{100, 0, -1, 37}}, {32, 8, 128, 16, []int32{64, 130, 2100}}, {6, 2, 20, 3, []int32{31, 5}},
		{12, 1, 48, 5, []int32{70}}, {2, 1, 256, 8, []int32{63, 200}}, {4, 4, 22, 7, []int32{9, 66}},
	} {
		for _, dt := range []tensor.DType{tensor.F32, tensor.BF16} {
			what := fmt.Sprintf("%s cache, heads=%d/%d D=%d block=%d positions %v", dt, c.heads, c.kvHeads, c.dim, c.block, c.pos)
			n, width := len(c.pos), c.kvHeads*c.dim
			blocks := n*(int(slices.Max(c.pos))+2*c.block)/c.block + 4
			kvg := tensor.NewKVCacheOf(b, dt, 1, c.kvHeads, c.dim, c.block, blocks)
			kvc := tensor.NewKVCache(cpu, 1, c.kvHeads, c.dim, c.block, blocks)
			stride := blocks
			tables := make([]int32, n*stride)
			inv := make([]float32, c.dim/2)
			for i := range inv {
				inv[i] = float32(math.Pow(500000, -2*float64(i)/float64(c.dim)))
			}
			q := randomT(rng, tensor.F32, 1, n, c.heads, c.dim)
			k := randomT(rng, tensor.F32, 1, n, c.kvHeads, c.dim)
			v := randomT(rng, tensor.F32, 1, n, c.kvHeads, c.dim)
			want := make([]float64, n*c.heads*c.dim)
			var live []int
			for i, p := range c.pos {
				if p < 0 {
					continue
				}
				live = append(live, i)
				s := int32(i)
				for _, kv := range []*tensor.KVCache{kvg, kvc} {
					kv.Reserve(int(s), int(p)/2+1) // the blocks of the sequences interleave
				}
			}
			for _, i := range live {
				for _, kv := range []*tensor.KVCache{kvg, kvc} {
					kv.Reserve(i, int(c.pos[i])+1)
				}
				copy(tables[i*stride:], kvg.Table(i))
				p := c.pos[i]
				if p > 0 {
					seq, pos := make([]int32, p), make([]int32, p)
					for j := range pos {
						seq[j], pos[j] = int32(i), int32(j)
					}
					kh := randomT(rng, tensor.F32, 1, int(p), c.kvHeads, c.dim).Convert(dt).Convert(tensor.F32)
					vh := randomT(rng, tensor.F32, 1, int(p), c.kvHeads, c.dim).Convert(dt).Convert(tensor.F32)
					b.StoreKV(kvg, 0, b.Upload(kh), b.Upload(vh), seq, pos)
					cpu.StoreKV(kvc, 0, kh, vh, seq, pos)
				}
				// The CPU reference: rotate q and k, store k and v (rounded as the cache keeps them) at pos, attend.
				qi := tensor.FromF32(append([]float32(nil), q.F32()[i*c.heads*c.dim:(i+1)*c.heads*c.dim]...), 1, c.heads, c.dim)
				ki := tensor.FromF32(append([]float32(nil), k.F32()[i*width:(i+1)*width]...), 1, c.kvHeads, c.dim)
				vi := tensor.FromF32(append([]float32(nil), v.F32()[i*width:(i+1)*width]...), 1, c.kvHeads, c.dim)
				cpu.RoPE(qi, []int32{p}, inv)
				cpu.RoPE(ki, []int32{p}, inv)
				ki, vi = ki.Convert(dt).Convert(tensor.F32), vi.Convert(dt).Convert(tensor.F32)
				cpu.StoreKV(kvc, 0, ki, vi, []int32{int32(i)}, []int32{p})
				wi := tensor.New(tensor.F32, 1, c.heads*c.dim)
				cpu.Attention(wi, qi, kvc, 0, []int32{int32(i)}, []int32{p})
				copy(want[i*c.heads*c.dim:], f64s(wi))
			}
			qd, kd, vd := b.Upload(q), b.Upload(k), b.Upload(v)
			posd, tabd := b.Upload(i32s(c.pos)), b.Upload(i32s(tables))
			invd := b.Upload(tensor.FromF32(inv, len(inv)))
			partials, counters := decodeScratch(n, c.heads, c.kvHeads, c.dim)
			part, count := poison(b, partials), b.Alloc(tensor.I32, counters)
			run := func(i0, rows int) []float32 {
				out := poison(b, n, c.heads*c.dim)
				func() {
					defer b.enter()()
					hd := c.heads * c.dim
					b.attentionDecodeRoPEGQA(dev(out)+uint64(4*i0*hd), dev(qd)+uint64(4*i0*hd), dev(kd)+uint64(4*i0*width), dev(vd)+uint64(4*i0*width),
						dev(kvg.K[0]), dev(kvg.V[0]), dt, dev(posd)+uint64(4*i0), dev(tabd)+uint64(4*i0*stride), stride, c.block,
						dev(invd), dev(part), dev(count), rows, c.heads, c.kvHeads, c.dim, float32(1/math.Sqrt(float64(c.dim))))
				}()
				return back(b, out)
			}
			first := run(0, n)
			for i, p := range c.pos {
				rows := first[i*c.heads*c.dim : (i+1)*c.heads*c.dim]
				if p < 0 {
					for _, x := range rows {
						if x != 0 {
							t.Fatalf("%s: idle row %d written with %g, want zeros", what, i, x)
						}
					}
					continue
				}
				tensortest.Compare(t, fmt.Sprintf("decode attention %s row %d", what, i), rows, want[i*c.heads*c.dim:(i+1)*c.heads*c.dim], tensortest.F32)
			}
			kc, vc := back(b, kvg.K[0]), back(b, kvg.V[0])
			kw, vw := tensor.New(tensor.F32, kvc.K[0].Shape...), tensor.New(tensor.F32, kvc.V[0].Shape...)
			copy(kw.F32(), kvc.K[0].F32())
			copy(vw.F32(), kvc.V[0].F32())
			for _, i := range live {
				row := kvg.Row(int32(i), c.pos[i])
				tensortest.Compare(t, fmt.Sprintf("decode attention %s: rotated k of row %d in the cache", what, i), kc[row*width:(row+1)*width], f64s(kw)[row*width:(row+1)*width], tensortest.F32)
				tensortest.Compare(t, fmt.Sprintf("decode attention %s: v of row %d in the cache", what, i), vc[row*width:(row+1)*width], f64s(vw)[row*width:(row+1)*width], tensortest.F32)
			}
			if second := run(0, n); !slices.Equal(first, second) {
				t.Errorf("decode attention %s: a second launch differs (the counters must reset; the merge must be deterministic)", what)
			}
			for i := range c.pos {
				alone := run(i, 1)
				hd := c.heads * c.dim
				if !slices.Equal(alone[i*hd:(i+1)*hd], first[i*hd:(i+1)*hd]) {
					t.Errorf("decode attention %s: row %d alone differs from the batch", what, i)
				}
			}
		}
	}
}

// i32s is an I32 host tensor of v.
func i32s(v []int32) *tensor.Tensor {
	t := tensor.New(tensor.I32, len(v))
	copy(t.I32(), v)
	return t
}

// The fused argmax and position update: the largest value, the lowest index on a tie, NaN never
// wins (a row of NaN gives 0), over vocabularies that leave the last block short; then the
// position, context, cache row and history move on as advance_i32 moves them. Twice in a row, so
// the block count must reset.
func TestArgmaxAdvance(t *testing.T) {
	b := newBackend(t)
	needSM90(t, b)
	rng := rand.New(rand.NewPCG(23, 23))
	const bs = 4
	table := b.Alloc(tensor.I32, 8)
	b.CopyTo(table, []int32{5, 2, 7, 1, 0, 3, 6, 4})
	for _, c := range []struct {
		d    int
		set  map[int]float32
		want int32
	}{
		{128256, map[int]float32{77777: 50}, 77777},
		{128256, map[int]float32{5: 60, 100000: 60}, 5},
		{128256, map[int]float32{128255: 70, 3: float32(math.NaN())}, 128255},
		{1000, map[int]float32{0: 80}, 0},
		{7, map[int]float32{6: 9, 2: 9}, 2},
		{3000, map[int]float32{-1: float32(math.NaN())}, 0}, // every value NaN
	} {
		x := randomT(rng, tensor.F32, 1, 1, c.d)
		for i, v := range c.set {
			if i < 0 {
				for k := range x.F32() {
					x.F32()[k] = v
				}
				continue
			}
			x.F32()[i] = v
		}
		xd := b.Upload(x)
		tok, pos, ctx, row, count := b.Alloc(tensor.I32, 1), b.Alloc(tensor.I32, 1), b.Alloc(tensor.I32, 1), b.Alloc(tensor.I32, 1), b.Alloc(tensor.I32, 1)
		candV, candI := b.Alloc(tensor.F32, argmaxMaxBlocks), b.Alloc(tensor.I32, argmaxMaxBlocks)
		hist := b.Alloc(tensor.I32, 32)
		b.CopyTo(pos, []int32{9})
		for step := 0; step < 2; step++ {
			func() {
				defer b.enter()()
				b.argmaxAdvance(dev(tok), dev(xd), c.d, dev(candV), dev(candI), dev(count), dev(pos), dev(ctx), dev(row), dev(table), bs, dev(hist))
			}()
			p := int32(10 + step)
			ints := func(t *tensor.Tensor) []int32 {
				h := tensor.New(tensor.I32, t.Numel())
				b.Download(h, t)
				return h.I32()
			}
			got := fmt.Sprint(ints(tok)[0], ints(pos)[0], ints(ctx)[0], ints(row)[0], ints(hist)[p])
			tb := []int32{5, 2, 7, 1, 0, 3, 6, 4}
			want := fmt.Sprint(c.want, p, p+1, tb[p/bs]*bs+p%bs, c.want)
			if got != want {
				t.Errorf("argmax+advance over %d values, step %d: tok pos ctx row hist[pos] = %s, want %s", c.d, step, got, want)
			}
		}
	}
}

// The profiler times every launch of a step — the fused step's 5 per layer plus 3, the generic
// step's 11 per layer plus 5 — and its steps are real ones: decoding goes on from where they
// left it, to the same tokens as an unprofiled decoder (the step is deterministic).
func TestModelProfile(t *testing.T) {
	b := newBackend(t)
	b.SyncEachOp = false
	m := randomModel(t, 4)
	r := llama.NewRunner(m, b)
	c := m.Config
	prompt := make([]int32, 9)
	for i := range prompt {
		prompt[i] = int32((i*37 + 11) % c.Vocab)
	}
	for _, fused := range []bool{false, true} {
		if fused && b.cc < 90 {
			continue
		}
		var tokens [2][]int32
		for run := range tokens {
			kv := r.NewKVCache(64, 16)
			if _, err := r.Forward(llama.Prompt(0, prompt[:8], 0, false), kv, nil); err != nil {
				t.Fatal(err)
			}
			d, err := NewDecoder(b, r.Model, kv, 0, 48)
			if err != nil {
				t.Fatal(err)
			}
			d.Fused, d.PDL = fused, fused
			if err := d.Start(prompt[8], 8); err != nil {
				t.Fatal(err)
			}
			steps := 0
			step := func(n int) {
				for i := 0; i < n; i++ {
					if err := d.Step(); err != nil {
						t.Fatal(err)
					}
				}
				steps += n
			}
			step(2)
			if run == 1 {
				p, err := d.Profile(3)
				if err != nil {
					t.Fatal(err)
				}
				steps += 3
				calls := 0
				for _, k := range p.Kernels {
					calls += k.Calls
					if !(k.Micros > 0) {
						t.Errorf("profile (fused %v): %s took %g µs", fused, k.Name, k.Micros)
					}
				}
				want := 11*c.Layers + 5
				if fused {
					want = 5*c.Layers + 3
				}
				if calls != want || p.Steps != 3 {
					t.Errorf("profile (fused %v): %d launches per step over %d steps, want %d over 3: %+v", fused, calls, p.Steps, want, p.Kernels)
				}
				t.Logf("profile (fused %v): %.1f µs per step: %+v", fused, p.Micros, p.ByTime())
			} else {
				step(3)
			}
			step(3)
			tokens[run] = d.Tokens(9, 9+steps)
			d.Close()
		}
		if fmt.Sprint(tokens[0]) != fmt.Sprint(tokens[1]) {
			t.Errorf("fused %v: tokens with a profile in the middle %v, without %v", fused, tokens[1], tokens[0])
		}
	}
}
