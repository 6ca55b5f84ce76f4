package tensor

import (
	"fmt"
	"math"
	"runtime"
	"slices"
)

// CPU is the pure-Go backend: F32 compute (F64 when the activations are F64), weights widened on
// the fly, work split over a fixed set of goroutines. It is the reference every other backend is
// tested against.
//
// Every op takes F32 or F64 activations: all the activation tensors of one call (dst, x, q, gate,
// the gradients of a backward op, …) share one of the two dtypes, and the op computes in it.
// Weights stay F32, BF16 or F16 and are widened exactly, so an F64 run of a model is an exact
// evaluation of the same function the F32 run rounds, which is what finite differences need.
type CPU struct {
	pool *pool

	// Each op keeps its job here and passes a pointer to the pool, so dispatch allocates nothing.
	matmul  matmulJob    // MatMul's F32 fast path
	widened []float32    // MatMul's bias widened to F32
	grad32  matmulGrad32 // MatMulBackward's F32 path, on MatMul's GEMM micro-kernel
	f32     cpuJobs[float32]
	f64     cpuJobs[float64]
}

// cpuJobs holds the jobs and scratch of every op written once over the scalar type T, one set per
// activation dtype.
type cpuJobs[T float] struct {
	pool *pool
	dot  func(x, y []T) T                  // F32: the kernels of dot.go; F64: dotGo
	load func(dst []T, t *Tensor, off int) // widen elements of a weight (or any F32/BF16/F16/F64 tensor)

	rows       rowJob[T]
	cols       colJob[T]
	rope       ropeJob[T]
	attention  attentionJob[T]
	attnSplit  attentionSplit[T]
	attnGrad   attentionGradJob[T]
	matmul     matmulPlainJob[T]
	mmGrad     matmulGradJob[T]
	index      batchIndex
	siluMul    func(out, g, u []T) // F32: the CPU's kernel; F64: siluMulGo
	sigmoid    func(dst, x []T)    // dst = 1 / (1 + e⁻ˣ): F32 with the CPU's exp; F64: sigmoidGo
	rowScratch [][]T               // per worker: a row for the row ops that need one
	widened    []T                 // a weight vector widened to T
	rms        []T                 // RMSNormBackward: each row's 1/rms
}

func (j *cpuJobs[T]) init(p *pool, dot func(x, y []T) T, load func(dst []T, t *Tensor, off int)) {
	j.pool, j.dot, j.load = p, dot, load
	j.attention.scores = make([][]T, p.threads)
	j.attnSplit.out = make([][]T, p.threads)
	j.attnGrad.scores = make([][]T, p.threads)
	j.attnGrad.dprobs = make([][]T, p.threads)
	j.rowScratch = make([][]T, p.threads)
	j.attnGrad.sums = make([][]T, p.threads)
	j.attnGrad.offs = make([][]int, p.threads)
	j.matmul.rows = make([][]T, p.threads)
	j.mmGrad.rows = make([][]T, p.threads)
}

// NewCPU starts a CPU backend with the given number of threads; threads <= 0 means one per
// logical CPU.
func NewCPU(threads int) *CPU {
	if threads <= 0 {
		threads = runtime.NumCPU()
	}
	c := &CPU{pool: newPool(threads)}
	c.matmul.scratch = make([][]float32, threads)
	c.matmul.narrow = make([][]uint16, threads)
	c.matmul.sums = make([]gemvSums, threads)
	c.f32.init(c.pool, dotF32, loadF32)
	c.f64.init(c.pool, dotGo[float64], loadF64)
	c.f32.attention.ops = attentionF32
	c.f32.siluMul = func(out, g, u []float32) { kern.siluMulF32(out, g, u) }
	c.f64.siluMul = siluMulGo[float64]
	c.f32.sigmoid = func(dst, x []float32) {
		for i, v := range x {
			dst[i] = -v
		}
		kern.expF32(dst[:len(x)])
		for i, e := range dst[:len(x)] {
			dst[i] = 1 / (1 + e)
		}
	}
	c.f64.sigmoid = sigmoidGo[float64]
	c.f64.attention.ops = attentionGo(dotGo[float64])
	c.grad32.product.packed = make([][]float32, threads)
	c.grad32.product.sums = make([][]float32, threads)
	return c
}

// Threads is the number of goroutines ops are split over.
func (c *CPU) Threads() int { return c.pool.threads }

// Close stops the backend's goroutines.
func (c *CPU) Close() { c.pool.close() }

// Alloc makes a host tensor.
func (c *CPU) Alloc(dtype DType, shape ...int) *Tensor { return New(dtype, shape...) }

// Upload returns t: the CPU computes in host memory.
func (c *CPU) Upload(t *Tensor) *Tensor { return t }

// Download copies src into dst.
func (c *CPU) Download(dst, src *Tensor) {
	if dst.DType != src.DType || len(dst.Data) != len(src.Data) {
		panic(fmt.Sprintf("tensor: download of %v into %v", src, dst))
	}
	copy(dst.Data, src.Data)
}

func sameShape(op string, a, b *Tensor) {
	if a.Numel() != b.Numel() || a.Cols() != b.Cols() {
		panic(fmt.Sprintf("tensor: %s of %v and %v", op, a.Shape, b.Shape))
	}
}

// vector returns t's elements as F32: t's own storage when it is F32, else widened into buf.
func vector(t *Tensor, buf *[]float32) []float32 {
	if t.DType == F32 {
		return t.F32()
	}
	v := grow(buf, t.Numel())
	loadF32(v, t, 0)
	return v
}

// vector returns t's elements as T: t's own storage when its dtype is T's, else widened into the
// jobs' buffer (one op uses it at a time).
func (j *cpuJobs[T]) vector(t *Tensor) []T {
	if t.DType == dtypeOf[T]() {
		return elems[T](t)
	}
	v := grow(&j.widened, t.Numel())
	j.load(v, t, 0)
	return v
}

// Embedding gathers rows. The table may be F32, BF16, F16 or F64 whatever dst is (the model also
// gathers rows of its own activations with it); an F64 table into an F32 dst is rounded.
func (c *CPU) Embedding(dst, table *Tensor, ids []int32) {
	d := table.Cols()
	if dst.Rows() != len(ids) || dst.Cols() != d {
		panic(fmt.Sprintf("tensor: embedding of %d ids from %v into %v", len(ids), table.Shape, dst.Shape))
	}
	switch activations("embedding", dst) {
	case F32:
		embedding(&c.f32, dst, table, ids)
	case F64:
		embedding(&c.f64, dst, table, ids)
	}
}

func embedding[T float](j *cpuJobs[T], dst, table *Tensor, ids []int32) {
	out := elems[T](dst)
	d, vocab := table.Cols(), table.Rows()
	for i, id := range ids {
		if id < 0 || int(id) >= vocab {
			panic(fmt.Sprintf("tensor: token id %d outside the embedding table of %d rows", id, vocab))
		}
		j.load(out[i*d:(i+1)*d], table, int(id)*d)
	}
}

// rowOp names the op a rowJob runs. (An enum rather than a function value: a generic function
// value made inside generic code is a closure allocated on every call.)
type rowOp uint8

const (
	rowRMSNorm rowOp = iota
	rowSiLUMul
	rowAdd
	rowSoftmax
	rowRMSNormGrad
	rowSiLUMulGrad
)

// rowJob runs one row-wise op over rows [lo, hi): each row i of d elements is independent. The
// backward ops use the same job with their own operands.
type rowJob[T float] struct {
	op     rowOp
	dst, x []T
	y, w   []T
	d      int
	eps    T

	dx, dy, dw []T // backward: gradient operands
	rms        []T // RMSNormBackward: each row's 1/rms, written by the row pass

	siluMul func(out, g, u []T) // cpuJobs.siluMul
	sigmoid func(dst, x []T)    // cpuJobs.sigmoid
	scratch [][]T               // cpuJobs.rowScratch
}

func (j *rowJob[T]) run(worker, lo, hi int) {
	for i := lo; i < hi; i++ {
		switch j.op {
		case rowRMSNorm:
			rmsnormRow(j, i)
		case rowSiLUMul:
			siluMulRow(j, i)
		case rowAdd:
			addRow(j, i)
		case rowSoftmax:
			softmax(j.dst[i*j.d : (i+1)*j.d])
		case rowRMSNormGrad:
			rmsnormBackwardRow(j, i)
		case rowSiLUMulGrad:
			siluMulBackwardRow(j, worker, i)
		}
	}
}

// colOp names the op a colJob runs.
type colOp uint8

const (
	colRMSNormWeight colOp = iota // rmsnormWeightGrad
	colScatterAdd                 // scatterAdd
	colSumRows                    // sumRowsCols
)

// colJob runs one op over columns [lo, hi) of a (n, d) operand: a sum over the rows (a weight or
// bias gradient), where a split by rows would have workers add into the same elements.
type colJob[T float] struct {
	op    colOp
	dst   []T // the gradient summed into: (d), or (vocab, d) for a scatter
	x, dy []T // (n, d)
	rms   []T // (n)
	ids   []int32
	n, d  int
}

func (j *colJob[T]) run(_, lo, hi int) {
	switch j.op {
	case colRMSNormWeight:
		rmsnormWeightGrad(j, lo, hi)
	case colScatterAdd:
		scatterAdd(j, lo, hi)
	case colSumRows:
		sumRowsCols(j, lo, hi)
	}
}

// rowGrain is the smallest number of elements worth handing to another goroutine.
const rowGrain = 1 << 14

func (j *cpuJobs[T]) rowsParallel(n, d int) {
	j.pool.parallel(n, (rowGrain+d-1)/max(d, 1), &j.rows)
}

func (j *cpuJobs[T]) colsParallel(n, d int) {
	j.pool.parallel(d, (rowGrain+n-1)/max(n, 1), &j.cols)
}

func rmsnormRow[T float](j *rowJob[T], i int) {
	x := j.x[i*j.d : (i+1)*j.d]
	out := j.dst[i*j.d : (i+1)*j.d]
	var ss T
	for _, v := range x {
		ss += v * v
	}
	scale := T(1 / math.Sqrt(float64(ss/T(j.d)+j.eps)))
	for k, v := range x {
		out[k] = v * scale * j.w[k]
	}
}

func (c *CPU) RMSNorm(dst, x, w *Tensor, eps float32) {
	sameShape("rmsnorm", dst, x)
	if w.Numel() != x.Cols() {
		panic(fmt.Sprintf("tensor: rmsnorm of %v with weight %v", x.Shape, w.Shape))
	}
	switch activations("rmsnorm", dst, x) {
	case F32:
		rmsnorm(&c.f32, dst, x, w, eps)
	case F64:
		rmsnorm(&c.f64, dst, x, w, eps)
	}
}

func rmsnorm[T float](j *cpuJobs[T], dst, x, w *Tensor, eps float32) {
	d := x.Cols()
	j.rows = rowJob[T]{op: rowRMSNorm, dst: elems[T](dst), x: elems[T](x), w: j.vector(w), d: d, eps: T(eps)}
	j.rowsParallel(x.Rows(), d)
}

// sigmoidGo is dst = σ(x) = 1 / (1 + e⁻ˣ), elementwise, as silu forms it.
func sigmoidGo[T float](dst, x []T) {
	for i, v := range x {
		_, dst[i] = silu(v)
	}
}

// silu is x·σ(x) with σ(x) = 1 / (1 + e⁻ˣ); it also returns σ(x), which its derivative needs.
func silu[T float](x T) (y, sigmoid T) {
	s := 1 / (1 + T(math.Exp(float64(-x))))
	return x * s, s
}

func siluMulRow[T float](j *rowJob[T], i int) {
	j.siluMul(j.dst[i*j.d:(i+1)*j.d], j.x[i*j.d:(i+1)*j.d], j.y[i*j.d:(i+1)*j.d])
}

// siluMulGo is out = g / (1 + e⁻ᵍ) · u, elementwise: the F64 path and the portable F32 kernel.
func siluMulGo[T float](out, g, u []T) {
	u = u[:len(g)]
	out = out[:len(g)]
	for k, v := range g {
		out[k] = v / (1 + T(math.Exp(float64(-v)))) * u[k]
	}
}

func (c *CPU) SiLUMul(dst, gate, up *Tensor) {
	sameShape("silu·mul", dst, gate)
	sameShape("silu·mul", gate, up)
	switch activations("silu·mul", dst, gate, up) {
	case F32:
		elementwise(&c.f32, rowSiLUMul, dst, gate, up)
	case F64:
		elementwise(&c.f64, rowSiLUMul, dst, gate, up)
	}
}

// elementwise runs a row op dst = f(x, y) over the rows of its operands.
func elementwise[T float](j *cpuJobs[T], op rowOp, dst, x, y *Tensor) {
	d := x.Cols()
	j.rows = rowJob[T]{op: op, dst: elems[T](dst), x: elems[T](x), y: optElems[T](y), d: d, siluMul: j.siluMul}
	j.rowsParallel(x.Rows(), d)
}

func addRow[T float](j *rowJob[T], i int) {
	a := j.x[i*j.d : (i+1)*j.d]
	b := j.y[i*j.d : (i+1)*j.d]
	out := j.dst[i*j.d : (i+1)*j.d]
	for k := range out {
		out[k] = a[k] + b[k]
	}
}

func (c *CPU) Add(dst, a, b *Tensor) {
	sameShape("add", dst, a)
	sameShape("add", a, b)
	switch activations("add", dst, a, b) {
	case F32:
		elementwise(&c.f32, rowAdd, dst, a, b)
	case F64:
		elementwise(&c.f64, rowAdd, dst, a, b)
	}
}

// softmax normalises x in place; exp is taken of x − max so that no term overflows.
func softmax[T float](x []T) {
	softmaxStats(x)
}

// softmaxStats is softmax, returning the maximum m and the reciprocal inv of the sum it used, so
// that a backward pass can recompute any element from its score s as exp(s − m)·inv, bit for bit.
func softmaxStats[T float](x []T) (m, inv T) {
	if len(x) == 0 {
		return 0, 0
	}
	m = x[0]
	for _, v := range x[1:] {
		if v > m {
			m = v
		}
	}
	var sum T
	for k, v := range x {
		e := T(math.Exp(float64(v - m)))
		x[k] = e
		sum += e
	}
	inv = 1 / sum
	for k := range x {
		x[k] *= inv
	}
	return m, inv
}

func (c *CPU) Softmax(x *Tensor) {
	switch activations("softmax", x) {
	case F32:
		elementwise(&c.f32, rowSoftmax, x, x, nil)
	case F64:
		elementwise(&c.f64, rowSoftmax, x, x, nil)
	}
}

// ropeJob rotates the heads of rows [lo, hi) by +θ (forward) or −θ (backward: the transpose of a
// rotation is the rotation back).
//
// cos and sin are tables of every row's angles, (rows, d/2) each, made for the positions,
// frequencies and sign of the call and kept for the next: a forward pass rotates q and k of every
// layer at the same positions, so the tables are made once per pass rather than 2·layers times
// (for a SmolLM2 decode step, 3,840 calls of math.Cos and math.Sin cut to 64).
type ropeJob[T float] struct {
	x        []T
	pos      []int32
	invFreq  []float32
	heads, d int
	sign     T // +1: rotate by +θ; −1: by −θ
	cos, sin []T

	// What the tables were made for.
	madePos  []int32
	madeFreq []float32
	madeSign T
}

// tables makes cos and sin for the job's positions, frequencies and sign unless they are there.
func (j *ropeJob[T]) tables() {
	if slices.Equal(j.madePos, j.pos) && slices.Equal(j.madeFreq, j.invFreq) && j.madeSign == j.sign && len(j.madePos) > 0 {
		return
	}
	half := len(j.invFreq)
	cos, sin := grow(&j.cos, len(j.pos)*half), grow(&j.sin, len(j.pos)*half)
	for i, p := range j.pos {
		for k, f := range j.invFreq {
			a := ropeAngle[T](f, p)
			cos[i*half+k] = T(math.Cos(a))
			sin[i*half+k] = j.sign * T(math.Sin(a))
		}
	}
	j.madePos = append(j.madePos[:0], j.pos...)
	j.madeFreq = append(j.madeFreq[:0], j.invFreq...)
	j.madeSign = j.sign
}

// ropeAngle is the angle pos·invFreq. In F32 it is rounded to F32 before cos and sin, as Hugging
// Face computes it, so that the CPU matches its logits at long positions. In F64 it is the exact
// product (a 24-bit significand times a position under 2^29 fits the 53 bits of a float64): the
// F64 path is an exact evaluation, not a replica of F32 rounding.
func ropeAngle[T float](invFreq float32, pos int32) float64 {
	if dtypeOf[T]() == F64 {
		return float64(invFreq) * float64(pos)
	}
	return float64(invFreq * float32(pos))
}

func (j *ropeJob[T]) run(worker, lo, hi int) {
	half := j.d / 2
	for i := lo; i < hi; i++ {
		cos, sin := j.cos[i*half:(i+1)*half], j.sin[i*half:(i+1)*half]
		row := j.x[i*j.heads*j.d : (i+1)*j.heads*j.d]
		for h := 0; h < j.heads; h++ {
			x := row[h*j.d : (h+1)*j.d]
			for k := 0; k < half; k++ {
				a, b := x[k], x[k+half]
				x[k] = a*cos[k] - b*sin[k]
				x[k+half] = b*cos[k] + a*sin[k]
			}
		}
	}
}

func (c *CPU) RoPE(x *Tensor, pos []int32, invFreq []float32) {
	c.rotate("rope", x, pos, invFreq, 1)
}

func (c *CPU) rotate(op string, x *Tensor, pos []int32, invFreq []float32, sign int) {
	if len(x.Shape) != 3 || x.Shape[0] != len(pos) || 2*len(invFreq) != x.Shape[2] {
		panic(fmt.Sprintf("tensor: %s of %v with %d positions and %d frequencies", op, x.Shape, len(pos), len(invFreq)))
	}
	switch activations(op, x) {
	case F32:
		rotate(&c.f32, x, pos, invFreq, float32(sign))
	case F64:
		rotate(&c.f64, x, pos, invFreq, float64(sign))
	}
}

func rotate[T float](j *cpuJobs[T], x *Tensor, pos []int32, invFreq []float32, sign T) {
	r := &j.rope
	r.x, r.pos, r.invFreq, r.sign = elems[T](x), pos, invFreq, sign
	r.heads, r.d = x.Shape[1], x.Shape[2]
	r.tables()
	j.pool.parallel(len(pos), 1, r)
}
