package tensor

import (
	"fmt"
	"unsafe"
)

// MatMulBackward is the backward of MatMul (see Backward):
//
//	dx += dy·w;   dw += dyᵀ·x;   db += Σ_i dy[i].
//
// With F32 activations both products run on the assembly micro-kernel of MatMul's GEMM
// (matmulBackward32); with F64 activations a plain loop computes them.
func (c *CPU) MatMulBackward(dx, dw, db, dy, x, w *Tensor) {
	n, in, out := x.Rows(), x.Cols(), w.Rows()
	if len(w.Shape) != 2 || w.Cols() != in || dy.Rows() != n || dy.Cols() != out ||
		(dx != nil && (dx.Rows() != n || dx.Cols() != in)) ||
		(dw != nil && (dw.Rows() != out || dw.Cols() != in)) || (db != nil && db.Numel() != out) {
		panic(fmt.Sprintf("tensor: matmul backward of dy %v, x %v, w %v into dx %v, dw %v, db %v",
			dy.Shape, x.Shape, w.Shape, shapeOf(dx), shapeOf(dw), shapeOf(db)))
	}
	act := activations("matmul backward", dx, dw, db, dy, x)
	if w.DType != F32 && w.DType != BF16 && w.DType != F16 && (w.DType != F64 || act != F64) {
		panic(fmt.Sprintf("tensor: matmul backward with %s weights and %s activations", w.DType, act))
	}
	switch act {
	case F32:
		sumRows(&c.f32, db, dy)
		if n > 0 && in > 0 && out > 0 {
			c.matmulBackward32(dx, dw, dy, x, w)
		}
	case F64:
		sumRows(&c.f64, db, dy)
		matmulBackwardPlain(&c.f64, dx, dw, dy, x, w)
	}
}

func shapeOf(t *Tensor) any {
	if t == nil {
		return nil
	}
	return t.Shape
}

// sumRows adds Σ_i dy[i] into db (when db is not nil), split over columns.
func sumRows[T float](j *cpuJobs[T], db, dy *Tensor) {
	if db == nil {
		return
	}
	j.cols = colJob[T]{op: colSumRows, dst: elems[T](db), dy: elems[T](dy), n: dy.Rows(), d: dy.Cols()}
	j.colsParallel(dy.Rows(), dy.Cols())
}

func sumRowsCols[T float](j *colJob[T], lo, hi int) {
	for i := 0; i < j.n; i++ {
		axpy(j.dst[lo:hi], 1, j.dy[i*j.d+lo:i*j.d+hi])
	}
}

// matmulGrad32 is the F32 MatMulBackward's scratch and job, kept across calls so that a repeated
// backward allocates nothing.
type matmulGrad32 struct {
	a       []float32 // the product's left operand, rows padded to the micro-kernel's
	product productJob
}

// matmulBackward32 computes both products with the GEMM micro-kernel of MatMul, with the operands
// in the roles that need no transposed weights:
//
//	dx (n, in)   += dy (n, out) · w (out, in):   a = dy, b = w (widened row by row)
//	dw (out, in) += dyᵀ (out, n) · x (n, in):   a = dyᵀ (transposed: activation-sized), b = x
//
// The kernel's rows are a's rows (tokens for dx: 44 tokens are 4 tiles of 12 on AVX-512, 64 are 5
// and a 6-row tile of gemmFew, so a partial tile wastes at most 5 rows), its 32 columns a panel of b's columns, its sum runs over
// b's rows. a is copied with its rows padStride apart, off a multiple of 4 KB: the 12 rows of a
// tile at a stride of a whole row of dy (8 KB at d_model 2048) would share L1's sets.
func (c *CPU) matmulBackward32(dx, dw, dy, x, w *Tensor) {
	g := &c.grad32
	n, out := x.Rows(), w.Rows()
	mr := kern.gemmRows
	if dx != nil {
		rows, lda := (n+mr-1)/mr*mr, out+padStride
		a := grow(&g.a, rows*lda)
		for i := 0; i < n; i++ {
			copy(a[i*lda:i*lda+out], dy.F32()[i*out:(i+1)*out])
		}
		clear(a[n*lda:])
		g.product.set(a, lda, w, dx.F32(), n, out)
		c.pool.parallel(g.product.panels(), 1, &g.product)
	}
	if dw != nil {
		rows, lda := (out+mr-1)/mr*mr, n+padStride
		a := grow(&g.a, rows*lda)
		kern.transpose(a, lda, dy.F32(), out, n, out)
		clear(a[out*lda:])
		g.product.set(a, lda, x, dw.F32(), out, n)
		c.pool.parallel(g.product.panels(), 1, &g.product)
	}
}

// padStride is what the backward adds to the row stride of its scratch blocks: 16 floats, one
// cache line, so that rows a power-of-two apart do not all fall in the same L1 sets.
const padStride = 16

// productJob adds a·b into c over the 32-column panels [lo, hi) of c, each worker owning its
// columns of c:
//
//	c[i·ldc + j] += Σ_k a[i·lda + k]·b[k, j]   for i < m, j < cols(b), k < depth
//
// a: F32, (m rounded up to the kernel's rows, lda), zeros in the padding rows; b: a 2-D tensor
// (F32, BF16 or F16) whose rows are the sum's index; c: F32, (m, ldc) with ldc = cols(b).
//
// Blocking, per worker (AVX-512):
//
//	for each group of panelGroup panels:               b's columns [g0, g0+512)
//	  for each block of ≤ productRows rows of c:       sums: (rows, productWidth), L2
//	    for each slice of productDepth along depth:    b's rows of it widened: (128, productWidth), L2
//	      for each tile of 12 rows, each panel:        micro-kernel, its a tile (12 × 128) from L1
//	    add sums into c
//
// b is widened row by row, in runs of 512 elements (1 KB of bf16: a 4 KB page holds four, where
// MatMul's runs are 512 bytes), and the kernel calls of one slice prefetch the rows of the next:
// b is the weights of a layer (dx) read across the sum, with a stride of a whole row that the
// hardware prefetcher does not follow, and each run a new page. The sums gather in a compact
// block, not in c, whose rows are a power of two apart. (Measured at the Llama shapes: 16 panels
// of 128 rows and 32 of 64 cost the same, 8 of 256 about 10% more CPU time.)
type productJob struct {
	a        []float32
	lda      int
	b        *Tensor
	c        []float32
	m, depth int
	packed   [][]float32 // per worker: one slice of the group's columns of b, (productDepth, productWidth)
	sums     [][]float32 // per worker: the sums of a block of rows, (productRows, productWidth)
}

const (
	// panelGroup is the number of panels a worker widens at once.
	panelGroup = 16
	// productDepth is the slice of the sum that one micro-kernel call runs over.
	productDepth = 128
	// productWidth is the row stride of the widened slice and of the sums.
	productWidth = panelGroup*gemmCols + padStride
	// productRows is the most rows of c whose sums a worker keeps at once (≤ 541 KB).
	productRows = 256
)

func (j *productJob) set(a []float32, lda int, b *Tensor, c []float32, m, depth int) {
	j.a, j.lda, j.b, j.c, j.m, j.depth = a, lda, b, c, m, depth
}

// panels is the number of 32-column panels of c.
func (j *productJob) panels() int { return (j.b.Cols() + gemmCols - 1) / gemmCols }

func (j *productJob) run(worker, lo, hi int) {
	mr, ldc := kern.gemmRows, j.b.Cols()
	block := productRows / mr * mr
	packed := perWorker(j.packed, worker, productDepth*productWidth)
	sums := perWorker(j.sums, worker, block*productWidth)
	stride := ldc * j.b.DType.Size()
	for p0 := lo; p0 < hi; p0 += panelGroup {
		group := min(panelGroup, hi-p0)
		g0 := p0 * gemmCols
		width := min(group*gemmCols, ldc-g0) // the group's columns of b and c
		// The last panel of a group narrower than its panels reads columns past width: stale
		// values, which reach only the columns of sums that are never added into c.
		for m0 := 0; m0 < j.m; m0 += block {
			rows := min(block, j.m-m0)
			tiles := (rows + mr - 1) / mr
			// The last tile runs on the smaller kernel when its rows fit: 64 tokens are 5 tiles of
			// 12 and one of 6 on AVX-512 (66 rows computed, not 72).
			few := kern.gemmFew != nil && rows-(tiles-1)*mr <= kern.gemmFewRows
			clear(sums[:tiles*mr*productWidth])
			for k0 := 0; k0 < j.depth; k0 += productDepth {
				kc := min(productDepth, j.depth-k0)
				for k := 0; k < kc; k++ {
					j.widen(packed[k*productWidth:k*productWidth+width], k0+k, g0)
				}
				// The calls of this slice prefetch the rows of the next: this group's, or after the
				// last slice the first of the next block of rows or of the next group. One call prefetches 2·kc bytes of each of
				// mr rows, a segment; the segments of a row are taken by consecutive calls.
				next, nextCol := k0+kc, g0
				if next >= j.depth {
					next = 0
					if m0+block >= j.m {
						nextCol = g0 + width
					}
				}
				last := min(j.depth, next+productDepth)
				if nextCol >= ldc {
					last = 0
				}
				segment := max(1, 2*kc/j.b.DType.Size())
				segments := max(1, (min(width, ldc-nextCol)+segment-1)/segment)
				call := 0
				for t := 0; t < tiles; t++ {
					a := j.a[(m0+t*mr)*j.lda+k0:]
					for p := 0; p < group; p++ {
						b, c := packed[p*gemmCols:], sums[t*mr*productWidth+p*gemmCols:]
						if t == tiles-1 && few {
							kern.gemmFew(a, j.lda, b, productWidth, c, productWidth, kc)
							continue
						}
						var pf uintptr
						if r := next + call/segments*mr; r < last {
							pf = j.addrB(r, nextCol+call%segments*segment)
						}
						call++
						kern.gemm(a, j.lda, b, productWidth, c, productWidth, kc, pf, stride)
					}
				}
			}
			for i := 0; i < rows; i++ {
				axpy(j.c[(m0+i)*ldc+g0:(m0+i)*ldc+g0+width], 1, sums[i*productWidth:i*productWidth+width])
			}
		}
	}
}

// widen writes row k of b's columns [c0, c0+len(dst)) into dst as F32.
func (j *productJob) widen(dst []float32, k, c0 int) {
	off := k*j.b.Cols() + c0
	switch j.b.DType {
	case F32:
		copy(dst, j.b.F32()[off:])
	case BF16:
		widenBF16(dst, j.b.U16()[off:off+len(dst)])
	case F16:
		widenF16(dst, j.b.U16()[off:off+len(dst)])
	}
}

// addrB is the address of b[r, c], for prefetching only: it may lie past b's data, so it is a
// uintptr, which the garbage collector does not follow.
func (j *productJob) addrB(r, c int) uintptr {
	if len(j.b.Data) == 0 {
		return 0
	}
	return uintptr(unsafe.Pointer(&j.b.Data[0])) + uintptr((r*j.b.Cols()+c)*j.b.DType.Size())
}

// matmulGradJob is the plain MatMulBackward of F64 activations: dx split over its columns, each
// worker widening its slice of every weight row once; dw split over its rows.
type matmulGradJob[T float] struct {
	weights    bool // dw over weight rows; else dx over input columns
	dx, dw     []T
	dy, x      []T
	w          *Tensor
	n, in, out int
	load       func(dst []T, t *Tensor, off int)
	rows       [][]T // per worker: a slice of one widened weight row
}

func (j *matmulGradJob[T]) run(worker, lo, hi int) {
	if j.weights {
		weightGradRows(j, lo, hi)
	} else {
		inputGradColumns(j, worker, lo, hi)
	}
}

func matmulBackwardPlain[T float](jobs *cpuJobs[T], dx, dw, dy, x, w *Tensor) {
	j := &jobs.mmGrad
	*j = matmulGradJob[T]{dx: optElems[T](dx), dw: optElems[T](dw), dy: elems[T](dy), x: elems[T](x), w: w,
		n: x.Rows(), in: x.Cols(), out: w.Rows(), load: jobs.load, rows: j.rows}
	if dx != nil {
		j.weights = false
		jobs.pool.parallel(j.in, matmulGrain, j)
	}
	if dw != nil {
		j.weights = true
		jobs.pool.parallel(j.out, matmulGrain, j)
	}
}

// inputGradColumns adds Σ_r dy[i, r]·w[r, lo:hi] into dx[i, lo:hi] for every token i.
func inputGradColumns[T float](j *matmulGradJob[T], worker, lo, hi int) {
	row := perWorker(j.rows, worker, hi-lo)
	for r := 0; r < j.out; r++ {
		j.load(row, j.w, r*j.in+lo)
		for i := 0; i < j.n; i++ {
			axpy(j.dx[i*j.in+lo:i*j.in+hi], j.dy[i*j.out+r], row)
		}
	}
}

// weightGradRows adds Σ_i dy[i, r]·x[i] into dw[r] for the weight rows [lo, hi).
func weightGradRows[T float](j *matmulGradJob[T], lo, hi int) {
	for r := lo; r < hi; r++ {
		dw := j.dw[r*j.in : (r+1)*j.in]
		for i := 0; i < j.n; i++ {
			axpy(dw, j.dy[i*j.out+r], j.x[i*j.in:(i+1)*j.in])
		}
	}
}
