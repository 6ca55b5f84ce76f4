package tensor

import "fmt"

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
//	dx (n, in)   += dy (n, out) · w (out, in):   a = dy, b = w (widened panel by panel)
//	dw (out, in) += dyᵀ (out, n) · x (n, in):   a = dyᵀ (transposed: activation-sized), b = x
//
// The kernel's rows are a's rows (tokens for dx), its 32 columns a panel of b's columns, its sum
// runs over b's rows; it adds into the output in place, which is the accumulation the op wants.
func (c *CPU) matmulBackward32(dx, dw, dy, x, w *Tensor) {
	g := &c.grad32
	n, out := x.Rows(), w.Rows()
	mr := kern.gemmRows
	if dx != nil {
		rows := (n + mr - 1) / mr * mr
		a := grow(&g.a, rows*out)
		copy(a, dy.F32())
		clear(a[n*out:])
		g.product.set(a, out, w, dx.F32(), n, out)
		c.pool.parallel(g.product.panels(), 1, &g.product)
	}
	if dw != nil {
		rows := (out + mr - 1) / mr * mr
		a := grow(&g.a, rows*n)
		kern.transpose(a, n, dy.F32(), out, n, out)
		clear(a[out*n:])
		g.product.set(a, n, x, dw.F32(), out, n)
		c.pool.parallel(g.product.panels(), 1, &g.product)
	}
}

// productJob adds a·b into c over the 32-column panels [lo, hi) of c, each worker owning its
// columns of c:
//
//	c[i·ldc + j] += Σ_k a[i·lda + k]·b[k, j]   for i < m, j < cols(b), k < depth
//
// a: F32, (m rounded up to the kernel's rows, lda), zeros in the padding rows; b: a 2-D tensor
// (F32, BF16 or F16) whose rows are the sum's index, widened into packed panels (k-major, 32 wide)
// as MatMul packs its tokens; c: F32, (m, ldc) with ldc = cols(b). Panels are taken in groups so
// that each row of b is read in runs of panelGroup·32 elements; a tile of a is reused across the
// group's panels from L1.
type productJob struct {
	a        []float32
	lda      int
	b        *Tensor
	c        []float32
	m, depth int
	packed   [][]float32 // per worker: the group's panels, (panelGroup, matmulDepth, 32)
	tile     [][]float32 // per worker: one (gemmRows, 32) tile for the edges of c
}

// panelGroup is the number of panels a worker packs at once.
const panelGroup = 8

func (j *productJob) set(a []float32, lda int, b *Tensor, c []float32, m, depth int) {
	j.a, j.lda, j.b, j.c, j.m, j.depth = a, lda, b, c, m, depth
}

// panels is the number of 32-column panels of c.
func (j *productJob) panels() int { return (j.b.Cols() + gemmCols - 1) / gemmCols }

func (j *productJob) run(worker, lo, hi int) {
	mr, ldc := kern.gemmRows, j.b.Cols()
	packed := perWorker(j.packed, worker, panelGroup*matmulDepth*gemmCols)
	tile := perWorker(j.tile, worker, mr*gemmCols)
	for p0 := lo; p0 < hi; p0 += panelGroup {
		group := min(panelGroup, hi-p0)
		for k0 := 0; k0 < j.depth; k0 += matmulDepth {
			kc := min(matmulDepth, j.depth-k0)
			for p := 0; p < group; p++ {
				j.pack(packed[p*kc*gemmCols:(p+1)*kc*gemmCols], k0, kc, (p0+p)*gemmCols)
			}
			for i0 := 0; i0 < j.m; i0 += mr {
				rows := min(mr, j.m-i0)
				a := j.a[i0*j.lda+k0:]
				for p := 0; p < group; p++ {
					b := packed[p*kc*gemmCols : (p+1)*kc*gemmCols]
					c0 := (p0 + p) * gemmCols
					cols := min(gemmCols, ldc-c0)
					if rows == mr && cols == gemmCols {
						kern.gemm(a, j.lda, b, j.c[i0*ldc+c0:], ldc, kc, 0, 0)
						continue
					}
					// An edge tile: the kernel writes a whole tile, so it adds into scratch.
					clear(tile)
					kern.gemm(a, j.lda, b, tile, gemmCols, kc, 0, 0)
					for i := 0; i < rows; i++ {
						axpy(j.c[(i0+i)*ldc+c0:(i0+i)*ldc+c0+cols], 1, tile[i*gemmCols:i*gemmCols+cols])
					}
				}
			}
		}
	}
}

// pack widens rows [k0, k0+kc) of b's columns [c0, c0+32) into dst, (kc, 32), zeros past b's
// last column.
func (j *productJob) pack(dst []float32, k0, kc, c0 int) {
	ldb := j.b.Cols()
	cols := min(gemmCols, ldb-c0)
	off := k0*ldb + c0
	if cols == gemmCols {
		switch j.b.DType {
		case F32:
			kern.widenBlockF32(dst, j.b.F32()[off:], ldb, kc, gemmCols)
		case BF16:
			kern.widenBlockBF16(dst, j.b.U16()[off:], ldb, kc, gemmCols)
		case F16:
			kern.widenBlockF16(dst, j.b.U16()[off:], ldb, kc, gemmCols)
		}
		return
	}
	for k := 0; k < kc; k++ {
		row := dst[k*gemmCols : (k+1)*gemmCols]
		loadF32(row[:cols], j.b, off+k*ldb)
		clear(row[cols:])
	}
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
