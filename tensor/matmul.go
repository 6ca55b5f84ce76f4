package tensor

import (
	"fmt"
	"unsafe"
)

// MatMul computes dst = x·wᵀ + bias in one of two ways, both parallel over the weight rows:
//
//   - Few tokens (decode): a GEMV. Each weight row is streamed from memory once and dotted with
//     every token while it sits in L1; four rows share each load of x, and four tokens each
//     widened weight. With one token the op is bound by the bytes of w, so the kernels widen
//     bf16/f16 in registers, never write a widened copy, and read w as four streams per core.
//     A token dotted alone with bf16 rows (width a multiple of 32) is first permuted by evenOdd,
//     so that dot4BF16EvenOdd widens each 64-byte line with two instructions and no shuffle:
//     the same sums, bit for bit, with more of each core's time left to keep its loads in flight.
//   - Many tokens (prefill): a GEMM bound by FLOPs. The tokens are packed once per call, transposed
//     into panels of 32 (k-major); every worker widens a slice of a block of its weight rows and
//     multiplies each tile of it against each panel with a register-blocked micro-kernel (12 rows
//     × 32 tokens on AVX-512): each widened weight is reused across 32 tokens from a register and
//     each token value across 12 weight rows. The result accumulates in a per-worker block of the
//     transposed output that is written into dst (+ bias) at the end.
//
// Blocking for the GEMM, per worker (sizes for AVX-512 and in = 4096):
//
//	for each group of ≤ matmulTokens tokens:           packed x: (panels, in, 32), L3, shared
//	  for each block of matmulRows* weight rows:       c: (rows, panels·32), L1/L2
//	    for each slice of matmulDepth along in:        packed x of the slice: ≤ 256 KB, L2
//	      widen the block's slice                      a: (rows, matmulDepth), L2
//	      for each tile of 12 rows:                    its a: 12 KB, L1
//	        for each panel of 32 tokens: micro-kernel  c tile += a tile · panel slice
//
// The micro-kernel also prefetches the weights of the tile's next slice while it computes, since
// the rows are read in runs of 512 bytes that the hardware prefetcher does not follow.
//
// A batch runs through the GEMM in whole panels; the tokens past the last whole panel run as a half
// panel (16 columns, half the FMAs) when there are matmulHalfPanel to 16 of them, as a padded whole
// panel from matmulPanel on, and otherwise through the GEMV, since a panel that is mostly padding
// costs more than reading the weights again.
type matmulJob struct {
	x     []float32 // (n, in)
	n, in int
	k     *kernels

	// The products of x, one or several (MatMulShared) whose weight rows the workers split as
	// one range: part i's rows are [row0, row0+out) of it.
	parts []matmulPart
	buf   [maxShared]matmulPart
	rows  int // Σ out

	// The tokens of this pass, [t0, t0+nt): a GEMM group, packed into packed, or the GEMV's tokens.
	t0, nt int
	gemm   bool
	packed []float32 // (panels, in, gemmCols); tokens past nt are zeros
	pack   packJob

	// The bf16 compute mode's GEMM (MatMulBF16, parts with bf16 set): the group's tokens rounded
	// to bf16 and packed as pairs into pairs, (panels, in/2, gemmCols), and multiplied with the
	// weights' own bf16 rows. bf16 and f32 say which packings the parts need.
	bf16, f32 bool
	pairs     []uint32

	scratch [][]float32 // per worker: the GEMM's widened slice a and output block c
	narrow  [][]uint16  // per worker: the bf16 GEMM's rounded tokens (packing), or its block of weights
	sums    []gemvSums  // per worker: the GEMV kernels' outputs

	// The GEMV's tokens that run one at a time, [t1, t0+nt), permuted by evenOdd into xEvenOdd
	// when a bf16 product takes them through dot4BF16EvenOdd (evenOddOK).
	t1        int
	evenOddOK bool
	xEvenOdd  []float32
}

const (
	// matmulPanel is the fewest tokens for which a GEMM panel of 32 beats the GEMV (measured:
	// the GEMV's 4×4 kernel gives ~200 GFLOP/s for 8 tokens or more, the GEMM ~230 for full panels).
	matmulPanel = 28
	// matmulHalfPanel is the fewest tokens past the whole panels of a batch that run as a half
	// panel (the 16-column kernel) rather than through the GEMV, which reads the weights again:
	// in CPU time, 12 tokens cost 0.6 of a whole panel through the GEMV against 0.5 as a half
	// panel (Llama 3.1 8B down projection, 44 tokens against 32 and 64).
	matmulHalfPanel = 8
	// matmulTokens is the most tokens in one packed group: 8 panels of 32.
	matmulTokens = 8 * gemmCols
	// matmulDepth is the slice of in that one micro-kernel call runs over.
	matmulDepth = 256
	// matmulRows* are the weight rows whose outputs a worker accumulates at once: fewer
	// keep the c block and the prefetched weights in L1 and L2, more re-read the packed tokens from
	// L3 less often. Measured best: 36 for up to 4 panels (c: 36×128×4 = 18 KB), 60 past that.
	matmulRowsFew  = 36
	matmulRowsMany = 60
	// matmulGrain is the fewest weight rows worth a goroutine of their own.
	matmulGrain = 16
)

func (c *CPU) MatMul(dst, x, w, bias *Tensor) { c.matMul(dst, x, w, bias, false) }

// MatMulBF16 is MatMul in the bf16 compute mode, which trades exactness for speed: where a batch
// runs through the GEMM (prefill) with bf16 weights, x is rounded to bf16 and multiplied with the
// weights in bf16 pairs (VDPBF16PS on a CPU with AVX512-BF16), every product exact and every sum
// F32: about twice the multiply-adds per instruction of the exact GEMM, and no widening of the
// weights. Everything else (the GEMV of a few tokens, F32 or F16 weights, an odd width) is exact,
// as MatMul.
func (c *CPU) MatMulBF16(dst, x, w, bias *Tensor) { c.matMul(dst, x, w, bias, true) }

func (c *CPU) matMul(dst, x, w, bias *Tensor, bf16 bool) {
	if x.DType == F64 || dst.DType == F64 {
		checkMatMul(dst, x, w, bias)
		matmulPlain(&c.f64, dst, x, w, bias) // F64 activations: matmul_plain.go
		return
	}
	c.MatMulShared(x, bf16, Product{dst, w, bias})
}

// maxShared is the most products MatMulShared takes at once.
const maxShared = 4

// A Product is one matrix product of MatMulShared: Dst = x·Wᵀ + Bias (Bias may be nil).
type Product struct{ Dst, W, Bias *Tensor }

// MatMulShared computes up to four products of the same input x in one pass, each exactly as
// MatMul (bf16: MatMulBF16) computes it, bit for bit: q, k and v of a layer, or its gate and up.
// The tokens are packed once for all of them, and the workers split the rows of all the weights
// as one range, so a decode step hands work to the other threads once instead of once per
// product.
func (c *CPU) MatMulShared(x *Tensor, bf16 bool, ps ...Product) {
	if len(ps) == 0 || len(ps) > maxShared {
		panic(fmt.Sprintf("tensor: %d products in one MatMulShared", len(ps)))
	}
	if x.DType == F64 {
		for _, p := range ps {
			c.matMul(p.Dst, x, p.W, p.Bias, bf16) // F64 activations: one at a time, matmul_plain.go
		}
		return
	}
	n, in := x.Rows(), x.Cols()
	j := &c.matmul
	j.parts = j.buf[:len(ps)]
	j.rows = 0
	j.bf16, j.f32 = false, false
	for i, pr := range ps {
		checkMatMul(pr.Dst, x, pr.W, pr.Bias)
		if x.DType != F32 || pr.Dst.DType != F32 {
			panic(fmt.Sprintf("tensor: shared matmul of %s activations into %s", x.DType, pr.Dst.DType))
		}
		switch pr.W.DType {
		case F32, BF16, F16:
		default:
			panic(fmt.Sprintf("tensor: matmul with %s weights", pr.W.DType))
		}
		p := &j.parts[i]
		p.w, p.dst, p.out, p.row0 = pr.W, pr.Dst.F32(), pr.W.Rows(), j.rows
		p.bias = nil
		if pr.Bias != nil {
			p.bias = vector(pr.Bias, &p.widened)
		}
		j.rows += p.out
		p.bf16 = bf16 && pr.W.DType == BF16 && in%2 == 0
		j.bf16, j.f32 = j.bf16 || p.bf16, j.f32 || !p.bf16
	}
	j.x, j.n, j.in, j.k = x.F32(), n, in, kern
	gemmTokens := gemmTokensOf(n)
	if gemmTokens > 0 {
		// Split the tokens into equal groups of whole panels, so that no group is mostly padding.
		groups := (gemmTokens + matmulTokens - 1) / matmulTokens
		size := (gemmTokens + groups - 1) / groups
		size = (size + gemmCols - 1) / gemmCols * gemmCols
		for t0 := 0; t0 < gemmTokens; t0 += size {
			j.t0, j.nt, j.gemm = t0, min(size, gemmTokens-t0), true
			panels := (j.nt + gemmCols - 1) / gemmCols
			if j.bf16 {
				j.pairs = grow(&j.pairs, panels*in/2*gemmCols)
			}
			if need := panels * in * gemmCols; j.f32 && len(j.packed) < need {
				j.packed = make([]float32, need)
			}
			j.pack.m = j
			c.pool.parallel(panels, 1, &j.pack)
			c.pool.parallel(j.rows, max(matmulGrain, j.k.gemmRows), j)
		}
	}
	if gemmTokens < n {
		j.t0, j.nt, j.gemm = gemmTokens, n-gemmTokens, false
		j.t1 = n - j.nt%4
		j.evenOddOK = false
		if j.k.dot4BF16EvenOdd != nil && in%32 == 0 && j.t1 < n && j.anyBF16() {
			j.xEvenOdd = grow(&j.xEvenOdd, (n-j.t1)*in)
			for t := j.t1; t < n; t++ {
				evenOdd(j.xEvenOdd[(t-j.t1)*in:(t-j.t1+1)*in], j.x[t*in:(t+1)*in])
			}
			j.evenOddOK = true
		}
		c.pool.parallel(j.rows, matmulGrain, j)
	}
}

// anyBF16 reports whether a product of the job has bf16 weights.
func (j *matmulJob) anyBF16() bool {
	for i := range j.parts {
		if j.parts[i].w.DType == BF16 {
			return true
		}
	}
	return false
}

// checkMatMul panics unless dst = x·wᵀ + bias has matching shapes.
func checkMatMul(dst, x, w, bias *Tensor) {
	n, in, out := x.Rows(), x.Cols(), w.Rows()
	if len(w.Shape) != 2 || w.Cols() != in || dst.Rows() != n || dst.Cols() != out {
		panic(fmt.Sprintf("tensor: matmul %v · %vᵀ into %v", x.Shape, w.Shape, dst.Shape))
	}
	if bias != nil && bias.Numel() != out {
		panic(fmt.Sprintf("tensor: matmul bias %v for %d outputs", bias.Shape, out))
	}
}

// matmulPart is one product of a matmulJob: dst = x·wᵀ + bias.
type matmulPart struct {
	w       *Tensor   // (out, in)
	bias    []float32 // (out) or nil
	dst     []float32 // (n, out)
	out     int
	row0    int       // where its rows start in the job's range
	widened []float32 // its bias widened to F32, when it is not F32
	bf16    bool      // its GEMM runs on bf16 pairs (MatMulBF16 with bf16 weights)
}

// gemmTokensOf is how many of a batch of n tokens run through the GEMM, the first ones; the rest
// run through the GEMV.
func gemmTokensOf(n int) int {
	if r := n % gemmCols; r >= matmulPanel || n >= gemmCols && r >= matmulHalfPanel && r <= gemmCols/2 {
		return n
	}
	return n - n%gemmCols
}

func (j *matmulJob) run(worker, lo, hi int) {
	for i := range j.parts {
		p := &j.parts[i]
		a, b := max(lo, p.row0)-p.row0, min(hi, p.row0+p.out)-p.row0
		switch {
		case a >= b:
		case j.gemm && p.bf16:
			j.runGEMMBF16(p, worker, a, b)
		case j.gemm:
			j.runGEMM(p, worker, a, b)
		default:
			j.runGEMV(p, &j.sums[worker], a, b)
		}
	}
}

// gemvSums receives what one GEMV kernel call computes. It lives in the job, one per worker,
// because the kernels are called through function values, which would move a local array to the
// heap on every call.
type gemvSums struct {
	four [4]float32  // dot4: one token, four rows
	tile [16]float32 // dot4x4: four tokens × four rows
}

// runGEMV computes the outputs of weight rows [lo, hi) for the tokens [t0, t0+nt), four tokens at
// a time and then one. The four rows of each kernel call come from the four quarters of the range
// (rows r, r+q, r+2q, r+3q), so the worker reads w as four long sequential streams: one core keeps
// more memory requests in flight with several streams than with one (about 42 GB/s against 30 for
// two threads on the reference machine), and adjacent rows would make four short streams that the
// prefetcher restarts every row. The rows past the quarters run through the same kernels as a
// quad of one row four times (stride 0), so that every row's sum is formed in the same order
// whichever rows a worker gets: the result does not depend on the number of threads.
//
// One token with bf16 rows (decode) runs the quarters in a single gemvBF16EvenOdd call, where the
// kernel set has it: the same kernel loop and sums as a call per quad.
func (j *matmulJob) runGEMV(p *matmulPart, sums *gemvSums, lo, hi int) {
	q := (hi - lo) / 4
	if gemv := j.k.gemvBF16EvenOdd; gemv != nil && j.nt == 1 && j.evenOddOK && p.w.DType == BF16 {
		t, in := j.t0, j.in
		gemv(p.dst[t*p.out+lo:], j.xEvenOdd[(t-j.t1)*in:(t-j.t1+1)*in], p.w.U16()[lo*in:], q)
	} else {
		for r := lo; r < lo+q; r++ {
			j.gemvQuad(p, sums, r, q)
		}
	}
	for r := lo + 4*q; r < hi; r++ {
		j.gemvQuad(p, sums, r, 0)
	}
	if p.bias != nil {
		for t := j.t0; t < j.t0+j.nt; t++ {
			out := p.dst[t*p.out : (t+1)*p.out]
			for r := lo; r < hi; r++ {
				out[r] += p.bias[r]
			}
		}
	}
}

// gemvQuad computes rows r, r+q, r+2q and r+3q (q may be 0: row r alone) for every token.
func (j *matmulJob) gemvQuad(p *matmulPart, sums *gemvSums, r, q int) {
	in, k := j.in, j.k
	four, tile := &sums.four, &sums.tile
	t, end := j.t0, j.t0+j.nt
	for ; t+4 <= end; t += 4 {
		x := j.x[t*in:]
		switch p.w.DType {
		case F32:
			k.dot4x4F32(tile, x, in, p.w.F32()[r*in:], q*in, in)
		case BF16:
			k.dot4x4BF16(tile, x, in, p.w.U16()[r*in:], q*in, in)
		case F16:
			k.dot4x4F16(tile, x, in, p.w.U16()[r*in:], q*in, in)
		}
		for tt := range 4 {
			out := p.dst[(t+tt)*p.out : (t+tt+1)*p.out]
			out[r], out[r+q], out[r+2*q], out[r+3*q] = tile[4*tt], tile[4*tt+1], tile[4*tt+2], tile[4*tt+3]
		}
	}
	for ; t < end; t++ {
		x := j.x[t*in : (t+1)*in]
		switch p.w.DType {
		case F32:
			k.dot4F32(four, x, p.w.F32()[r*in:], q*in)
		case BF16:
			if j.evenOddOK {
				k.dot4BF16EvenOdd(four, j.xEvenOdd[(t-j.t1)*in:(t-j.t1+1)*in], p.w.U16()[r*in:], q*in)
			} else {
				k.dot4BF16(four, x, p.w.U16()[r*in:], q*in)
			}
		case F16:
			k.dot4F16(four, x, p.w.U16()[r*in:], q*in)
		}
		out := p.dst[t*p.out : (t+1)*p.out]
		out[r], out[r+q], out[r+2*q], out[r+3*q] = four[0], four[1], four[2], four[3]
	}
}

// blocking is the GEMM's blocking of the current token group: its tokens padded to whole panels,
// the panels, the weight rows of a block (whole tiles), and the depth of a slice.
func (j *matmulJob) blocking() (width, panels, blockRows, depth int) {
	mr := j.k.gemmRows
	width = (j.nt + gemmCols - 1) / gemmCols * gemmCols
	panels = width / gemmCols
	blockRows = matmulRowsMany / mr * mr
	if panels <= 4 {
		blockRows = matmulRowsFew / mr * mr
	}
	return width, panels, blockRows, min(matmulDepth, j.in)
}

// runGEMM computes the outputs of weight rows [lo, hi) for the token group [t0, t0+nt).
func (j *matmulJob) runGEMM(p *matmulPart, worker, lo, hi int) {
	in, k := j.in, j.k
	mr := k.gemmRows
	width, panels, blockRows, depth := j.blocking()
	scratch := grow(&j.scratch[worker], blockRows*(matmulDepth+width))
	ablock := scratch[:blockRows*depth]                                  // (rows, kc) widened weights
	cblock := scratch[blockRows*depth : blockRows*depth+blockRows*width] // (rows, width) transposed output

	for i0 := lo; i0 < hi; i0 += blockRows {
		rows := min(blockRows, hi-i0)
		tiles := (rows + mr - 1) / mr
		c := cblock[:tiles*mr*width]
		clear(c)
		for p0 := 0; p0 < in; p0 += depth {
			kc := min(depth, in-p0)
			// Widen the slice of the whole block at once. The last tile may run past rows: its
			// extra rows of a hold stale values, and the c rows they feed are never read.
			a := ablock[:tiles*mr*kc]
			j.widenBlock(p, a, i0, rows, p0, kc)
			for tile := 0; tile < tiles; tile++ {
				at := a[tile*mr*kc:]
				ct := c[tile*mr*width:]
				// The first panel's call prefetches the weights this tile's rows will widen next:
				// the next slice, or after the last slice the first slice of the next block.
				pf := j.weightAddr(p, i0+tile*mr, p0+kc)
				if p0+kc >= in {
					pf = 0
					if i0+blockRows < hi {
						pf = j.weightAddr(p, i0+blockRows+tile*mr, 0)
					}
				}
				for pn := 0; pn < panels; pn++ {
					gemm := k.gemm
					if j.nt-pn*gemmCols <= gemmCols/2 {
						gemm = k.gemmHalf
					}
					gemm(at, kc, j.packed[(pn*in+p0)*gemmCols:], gemmCols, ct[pn*gemmCols:], width, kc, pf, in*p.w.DType.Size())
					pf = 0
				}
			}
		}
		j.store(p, c, i0, rows, width)
	}
}

// store writes a block of outputs into dst (+ bias): c holds them transposed, c[i·width + t] is
// token t0+t of weight row i0+i.
func (j *matmulJob) store(p *matmulPart, c []float32, i0, rows, width int) {
	j.k.transpose(p.dst[j.t0*p.out+i0:], p.out, c, width, rows, j.nt)
	if p.bias != nil {
		for t := j.t0; t < j.t0+j.nt; t++ {
			out := p.dst[t*p.out+i0 : t*p.out+i0+rows]
			for i, b := range p.bias[i0 : i0+rows] {
				out[i] += b
			}
		}
	}
}

// runGEMMBF16 is runGEMM in the bf16 compute mode: with more than two panels the block's slice of
// the weights' bf16 rows is copied as it is (no widening) into a contiguous block, padded with
// zero rows to whole tiles, so that the tiles read it from L2 in order rather than as 12 strided
// runs (measured: +10-25% at 512 tokens, -5-15% at 64); the packed tokens are bf16 pairs.
func (j *matmulJob) runGEMMBF16(p *matmulPart, worker, lo, hi int) {
	in, k := j.in, j.k
	mr := k.gemmRows
	width, panels, blockRows, depth := j.blocking()
	cblock := grow(&j.scratch[worker], blockRows*width)
	ablock := grow(&j.narrow[worker], blockRows*depth)
	w := p.w.U16()
	for i0 := lo; i0 < hi; i0 += blockRows {
		rows := min(blockRows, hi-i0)
		tiles := (rows + mr - 1) / mr
		c := cblock[:tiles*mr*width]
		clear(c)
		for p0 := 0; p0 < in; p0 += depth {
			kc := min(depth, in-p0)
			// With few panels the copy costs more than the strided reads it saves: the tiles
			// read the weights where they lie, all but a last tile past the matrix's end.
			copied := panels > 2
			a, lda := ablock[:tiles*mr*kc], kc
			if copied {
				for i := 0; i < rows; i++ {
					copy(a[i*kc:(i+1)*kc], w[(i0+i)*in+p0:])
				}
				clear(a[rows*kc:])
			}
			for tile := 0; tile < tiles; tile++ {
				at := a[tile*mr*kc:]
				if r0 := i0 + tile*mr; !copied && r0+mr <= p.out {
					at, lda = w[r0*in+p0:], in
				} else if !copied {
					at, lda = a[:mr*kc], kc
					clear(at)
					for i := 0; i < p.out-r0; i++ {
						copy(at[i*kc:(i+1)*kc], w[(r0+i)*in+p0:])
					}
				}
				ct := c[tile*mr*width:]
				for pn := 0; pn < panels; pn++ {
					gemm := k.gemmBF16
					if j.nt-pn*gemmCols <= gemmCols/2 {
						gemm = k.gemmHalfBF16
					}
					gemm(at, lda, j.pairs[(pn*in+p0)/2*gemmCols:], gemmCols, ct[pn*gemmCols:], width, kc)
				}
			}
		}
		j.store(p, c, i0, rows, width)
	}
}

// weightAddr is the address of weight (r, k), for prefetching only: it may lie past the weights,
// so it is a uintptr, which the garbage collector does not follow.
func (j *matmulJob) weightAddr(p *matmulPart, r, k int) uintptr {
	if len(p.w.Data) == 0 {
		return 0
	}
	return uintptr(unsafe.Pointer(&p.w.Data[0])) + uintptr((r*j.in+k)*p.w.DType.Size())
}

// widenBlock writes columns [p0, p0+kc) of the weight rows [r0, r0+rows) into a as F32, (rows, kc).
func (j *matmulJob) widenBlock(p *matmulPart, a []float32, r0, rows, p0, kc int) {
	in := j.in
	src := r0*in + p0
	switch p.w.DType {
	case F32:
		j.k.widenBlockF32(a, p.w.F32()[src:], in, rows, kc)
	case BF16:
		j.k.widenBlockBF16(a, p.w.U16()[src:], in, rows, kc)
	case F16:
		j.k.widenBlockF16(a, p.w.U16()[src:], in, rows, kc)
	}
}

// packJob transposes the tokens of the current group into k-major panels of gemmCols:
// packed[(p·in + k)·32 + t] = x[t0 + 32p + t][k], zero for tokens past the group.
type packJob struct {
	m *matmulJob
}

func (pj *packJob) run(worker, lo, hi int) {
	j := pj.m
	in := j.in
	if j.bf16 {
		pj.pairs(worker, lo, hi)
	}
	for p := lo; p < hi && j.f32; p++ {
		panel := j.packed[p*in*gemmCols : (p+1)*in*gemmCols]
		tokens := min(gemmCols, j.nt-p*gemmCols)
		j.k.transpose(panel, gemmCols, j.x[(j.t0+p*gemmCols)*in:], in, tokens, in)
		if tokens < gemmCols {
			for k := 0; k < in; k++ {
				clear(panel[k*gemmCols+tokens : (k+1)*gemmCols])
			}
		}
	}
}

// pairs packs panels [lo, hi) for the bf16 GEMM: each token's row rounded to bf16, where elements
// k and k+1 make one 32-bit pair, then the panel's (tokens, in/2) pairs transposed into
// (in/2, gemmCols): pairs[(p·in/2 + k/2)·32 + t] holds token t0 + 32p + t's elements k, k+1.
func (pj *packJob) pairs(worker, lo, hi int) {
	j := pj.m
	half := j.in / 2
	rounded := grow(&j.narrow[worker], gemmCols*j.in)
	for p := lo; p < hi; p++ {
		tokens := min(gemmCols, j.nt-p*gemmCols)
		for t := 0; t < tokens; t++ {
			row := (j.t0 + p*gemmCols + t) * j.in
			j.k.narrowBF16(rounded[t*j.in:(t+1)*j.in], j.x[row:row+j.in])
		}
		// The transpose moves 32-bit elements, whatever they hold.
		panel := asF32(j.pairs[p*half*gemmCols : (p+1)*half*gemmCols])
		j.k.transpose(panel, gemmCols, asF32(rounded[:tokens*j.in]), half, tokens, half)
		if tokens < gemmCols {
			for k := 0; k < half; k++ {
				clear(panel[k*gemmCols+tokens : (k+1)*gemmCols])
			}
		}
	}
}

// asF32 views 32-bit elements (or pairs of 16-bit ones) as float32, for moving them about.
func asF32[E uint32 | uint16](s []E) []float32 {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&s[0])), len(s)*int(unsafe.Sizeof(s[0]))/4)
}
