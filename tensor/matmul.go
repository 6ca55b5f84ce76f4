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
	x          []float32 // (n, in)
	w          *Tensor   // (out, in)
	bias       []float32 // (out) or nil
	dst        []float32 // (n, out)
	n, in, out int
	k          *kernels

	// The tokens of this pass, [t0, t0+nt): a GEMM group, packed into packed, or the GEMV's tokens.
	t0, nt int
	gemm   bool
	packed []float32 // (panels, in, gemmCols); tokens past nt are zeros
	pack   packJob

	// bf16 is the bf16 compute mode's GEMM (MatMulBF16): the group's tokens rounded to bf16 and
	// packed as pairs into pairs, (panels, in/2, gemmCols), and multiplied with the weights' own
	// bf16 rows.
	bf16  bool
	pairs []uint32

	scratch [][]float32 // per worker: the GEMM's widened slice a and output block c
	narrow  [][]uint16  // per worker: the bf16 GEMM's rounded tokens, or a tile of rows padded
	sums    []gemvSums  // per worker: the GEMV kernels' outputs
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
	n, in, out := x.Rows(), x.Cols(), w.Rows()
	if len(w.Shape) != 2 || w.Cols() != in || dst.Rows() != n || dst.Cols() != out {
		panic(fmt.Sprintf("tensor: matmul %v · %vᵀ into %v", x.Shape, w.Shape, dst.Shape))
	}
	if bias != nil && bias.Numel() != out {
		panic(fmt.Sprintf("tensor: matmul bias %v for %d outputs", bias.Shape, out))
	}
	if x.DType == F64 || dst.DType == F64 {
		matmulPlain(&c.f64, dst, x, w, bias) // F64 activations: matmul_plain.go
		return
	}
	switch w.DType {
	case F32, BF16, F16:
	default:
		panic(fmt.Sprintf("tensor: matmul with %s weights", w.DType))
	}
	j := &c.matmul
	j.x, j.w, j.dst, j.n, j.in, j.out, j.k = x.F32(), w, dst.F32(), n, in, out, kern
	j.bias = nil
	if bias != nil {
		j.bias = vector(bias, &c.widened)
	}
	gemmTokens := gemmTokensOf(n)
	j.bf16 = bf16 && w.DType == BF16 && in%2 == 0
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
			} else if need := panels * in * gemmCols; len(j.packed) < need {
				j.packed = make([]float32, need)
			}
			j.pack.m = j
			c.pool.parallel(panels, 1, &j.pack)
			c.pool.parallel(out, max(matmulGrain, j.k.gemmRows), j)
		}
	}
	if gemmTokens < n {
		j.t0, j.nt, j.gemm = gemmTokens, n-gemmTokens, false
		c.pool.parallel(out, matmulGrain, j)
	}
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
	if j.gemm && j.bf16 {
		j.runGEMMBF16(worker, lo, hi)
	} else if j.gemm {
		j.runGEMM(worker, lo, hi)
	} else {
		j.runGEMV(&j.sums[worker], lo, hi)
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
// prefetcher restarts every row.
func (j *matmulJob) runGEMV(sums *gemvSums, lo, hi int) {
	in, k := j.in, j.k
	q := (hi - lo) / 4
	four, tile := &sums.four, &sums.tile
	for r := lo; r < lo+q; r++ {
		t, end := j.t0, j.t0+j.nt
		for ; t+4 <= end; t += 4 {
			x := j.x[t*in:]
			switch j.w.DType {
			case F32:
				k.dot4x4F32(tile, x, in, j.w.F32()[r*in:], q*in, in)
			case BF16:
				k.dot4x4BF16(tile, x, in, j.w.U16()[r*in:], q*in, in)
			case F16:
				k.dot4x4F16(tile, x, in, j.w.U16()[r*in:], q*in, in)
			}
			for tt := range 4 {
				out := j.dst[(t+tt)*j.out : (t+tt+1)*j.out]
				out[r], out[r+q], out[r+2*q], out[r+3*q] = tile[4*tt], tile[4*tt+1], tile[4*tt+2], tile[4*tt+3]
			}
		}
		for ; t < end; t++ {
			x := j.x[t*in : (t+1)*in]
			switch j.w.DType {
			case F32:
				k.dot4F32(four, x, j.w.F32()[r*in:], q*in)
			case BF16:
				k.dot4BF16(four, x, j.w.U16()[r*in:], q*in)
			case F16:
				k.dot4F16(four, x, j.w.U16()[r*in:], q*in)
			}
			out := j.dst[t*j.out : (t+1)*j.out]
			out[r], out[r+q], out[r+2*q], out[r+3*q] = four[0], four[1], four[2], four[3]
		}
	}
	for r := lo + 4*q; r < hi; r++ {
		for t := j.t0; t < j.t0+j.nt; t++ {
			x := j.x[t*in : (t+1)*in]
			var s float32
			switch j.w.DType {
			case F32:
				s = k.dotF32(x, j.w.F32()[r*in:(r+1)*in])
			case BF16:
				s = k.dotBF16(x, j.w.U16()[r*in:(r+1)*in])
			case F16:
				s = k.dotF16(x, j.w.U16()[r*in:(r+1)*in])
			}
			j.dst[t*j.out+r] = s
		}
	}
	if j.bias != nil {
		for t := j.t0; t < j.t0+j.nt; t++ {
			out := j.dst[t*j.out : (t+1)*j.out]
			for r := lo; r < hi; r++ {
				out[r] += j.bias[r]
			}
		}
	}
}

// runGEMM computes the outputs of weight rows [lo, hi) for the token group [t0, t0+nt).
func (j *matmulJob) runGEMM(worker, lo, hi int) {
	in, k := j.in, j.k
	mr := k.gemmRows
	width := (j.nt + gemmCols - 1) / gemmCols * gemmCols // padded tokens of the group
	panels := width / gemmCols
	blockRows := matmulRowsMany / mr * mr
	if panels <= 4 {
		blockRows = matmulRowsFew / mr * mr
	}
	depth := min(matmulDepth, in)
	if need := blockRows * (matmulDepth + width); len(j.scratch[worker]) < need {
		j.scratch[worker] = make([]float32, need)
	}
	scratch := j.scratch[worker]
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
			j.widenBlock(a, i0, rows, p0, kc)
			for tile := 0; tile < tiles; tile++ {
				at := a[tile*mr*kc:]
				ct := c[tile*mr*width:]
				// The first panel's call prefetches the weights this tile's rows will widen next:
				// the next slice, or after the last slice the first slice of the next block.
				pf := j.weightAddr(i0+tile*mr, p0+kc)
				if p0+kc >= in {
					pf = 0
					if i0+blockRows < hi {
						pf = j.weightAddr(i0+blockRows+tile*mr, 0)
					}
				}
				for p := 0; p < panels; p++ {
					gemm := k.gemm
					if j.nt-p*gemmCols <= gemmCols/2 {
						gemm = k.gemmHalf
					}
					gemm(at, kc, j.packed[(p*in+p0)*gemmCols:], gemmCols, ct[p*gemmCols:], width, kc, pf, in*j.w.DType.Size())
					pf = 0
				}
			}
		}
		j.store(c, i0, rows, width)
	}
}

// store writes a block of outputs into dst (+ bias): c holds them transposed, c[i·width + t] is
// token t0+t of weight row i0+i.
func (j *matmulJob) store(c []float32, i0, rows, width int) {
	j.k.transpose(j.dst[j.t0*j.out+i0:], j.out, c, width, rows, j.nt)
	if j.bias != nil {
		for t := j.t0; t < j.t0+j.nt; t++ {
			out := j.dst[t*j.out+i0 : t*j.out+i0+rows]
			for i, b := range j.bias[i0 : i0+rows] {
				out[i] += b
			}
		}
	}
}

// runGEMMBF16 is runGEMM in the bf16 compute mode: the tiles read the weights' bf16 rows where
// they lie (a tile past the last row reads a copy padded with zeros), so nothing is widened, and
// the packed tokens are bf16 pairs.
func (j *matmulJob) runGEMMBF16(worker, lo, hi int) {
	in, k := j.in, j.k
	mr := k.gemmRows
	width := (j.nt + gemmCols - 1) / gemmCols * gemmCols
	panels := width / gemmCols
	blockRows := matmulRowsMany / mr * mr
	if panels <= 4 {
		blockRows = matmulRowsFew / mr * mr
	}
	depth := min(matmulDepth, in)
	cblock := grow(&j.scratch[worker], blockRows*width)
	w := j.w.U16()
	for i0 := lo; i0 < hi; i0 += blockRows {
		rows := min(blockRows, hi-i0)
		tiles := (rows + mr - 1) / mr
		c := cblock[:tiles*mr*width]
		clear(c)
		for p0 := 0; p0 < in; p0 += depth {
			kc := min(depth, in-p0)
			for tile := 0; tile < tiles; tile++ {
				r0 := i0 + tile*mr
				a, lda := w[r0*in+p0:], in
				if r0+mr > j.out {
					pad := grow(&j.narrow[worker], mr*kc)
					clear(pad)
					for i := 0; i < j.out-r0; i++ {
						copy(pad[i*kc:(i+1)*kc], w[(r0+i)*in+p0:])
					}
					a, lda = pad, kc
				}
				ct := c[tile*mr*width:]
				for p := 0; p < panels; p++ {
					gemm := k.gemmBF16
					if j.nt-p*gemmCols <= gemmCols/2 {
						gemm = k.gemmHalfBF16
					}
					gemm(a, lda, j.pairs[(p*in+p0)/2*gemmCols:], gemmCols, ct[p*gemmCols:], width, kc)
				}
			}
		}
		j.store(c, i0, rows, width)
	}
}

// weightAddr is the address of weight (r, k), for prefetching only: it may lie past the weights,
// so it is a uintptr, which the garbage collector does not follow.
func (j *matmulJob) weightAddr(r, k int) uintptr {
	if len(j.w.Data) == 0 {
		return 0
	}
	return uintptr(unsafe.Pointer(&j.w.Data[0])) + uintptr((r*j.in+k)*j.w.DType.Size())
}

// widenBlock writes columns [p0, p0+kc) of the weight rows [r0, r0+rows) into a as F32, (rows, kc).
func (j *matmulJob) widenBlock(a []float32, r0, rows, p0, kc int) {
	in := j.in
	src := r0*in + p0
	switch j.w.DType {
	case F32:
		j.k.widenBlockF32(a, j.w.F32()[src:], in, rows, kc)
	case BF16:
		j.k.widenBlockBF16(a, j.w.U16()[src:], in, rows, kc)
	case F16:
		j.k.widenBlockF16(a, j.w.U16()[src:], in, rows, kc)
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
		return
	}
	for p := lo; p < hi; p++ {
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
