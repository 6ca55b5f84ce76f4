package tensor

import (
	"fmt"
	"math"
	"runtime"
)

// CPU is the pure-Go backend: F32 compute, weights widened on the fly, work split over a fixed set
// of goroutines. It is the reference every other backend is tested against.
type CPU struct {
	pool *pool

	// Each op keeps its job here and passes a pointer to the pool, so dispatch allocates nothing.
	matmul    matmulJob
	attention attentionJob
	rope      ropeJob
	rows      rowJob
	widened   []float32 // a norm weight widened to F32
}

// NewCPU starts a CPU backend with the given number of threads; threads <= 0 means one per
// logical CPU.
func NewCPU(threads int) *CPU {
	if threads <= 0 {
		threads = runtime.NumCPU()
	}
	c := &CPU{pool: newPool(threads)}
	c.matmul.scratch = make([][]float32, threads)
	c.matmul.sums = make([]gemvSums, threads)
	c.attention.scores = make([][]float32, threads)
	c.rope.cos = make([][]float32, threads)
	c.rope.sin = make([][]float32, threads)
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
	n := t.Numel()
	if cap(*buf) < n {
		*buf = make([]float32, n)
	}
	v := (*buf)[:n]
	widenRow(v, t, 0)
	return v
}

// widenRow writes row r of the 2-D (or 1-D, r = 0) tensor t into dst as F32.
func widenRow(dst []float32, t *Tensor, r int) {
	n := len(dst)
	switch t.DType {
	case F32:
		copy(dst, t.F32()[r*n:(r+1)*n])
	case BF16:
		widenBF16(dst, t.U16()[r*n:(r+1)*n])
	case F16:
		widenF16(dst, t.U16()[r*n:(r+1)*n])
	default:
		panic(fmt.Sprintf("tensor: %s weights", t.DType))
	}
}

func (c *CPU) Embedding(dst, table *Tensor, ids []int32) {
	d := table.Cols()
	if dst.Rows() != len(ids) || dst.Cols() != d {
		panic(fmt.Sprintf("tensor: embedding of %d ids from %v into %v", len(ids), table.Shape, dst.Shape))
	}
	out := dst.F32()
	vocab := table.Rows()
	for i, id := range ids {
		if id < 0 || int(id) >= vocab {
			panic(fmt.Sprintf("tensor: token id %d outside the embedding table of %d rows", id, vocab))
		}
		widenRow(out[i*d:(i+1)*d], table, int(id))
	}
}

// rowJob runs one row-wise op over rows [lo, hi).
type rowJob struct {
	op     func(j *rowJob, i int)
	dst, x []float32
	y, w   []float32
	d      int
	eps    float32
}

func (j *rowJob) run(_, lo, hi int) {
	for i := lo; i < hi; i++ {
		j.op(j, i)
	}
}

// rowGrain is the smallest number of elements worth handing to another goroutine.
const rowGrain = 1 << 14

func (c *CPU) rowsParallel(n, d int) {
	c.pool.parallel(n, (rowGrain+d-1)/d, &c.rows)
}

func rmsnormRow(j *rowJob, i int) {
	x := j.x[i*j.d : (i+1)*j.d]
	out := j.dst[i*j.d : (i+1)*j.d]
	var ss float32
	for _, v := range x {
		ss += v * v
	}
	scale := float32(1 / math.Sqrt(float64(ss/float32(j.d)+j.eps)))
	for k, v := range x {
		out[k] = v * scale * j.w[k]
	}
}

func (c *CPU) RMSNorm(dst, x, w *Tensor, eps float32) {
	sameShape("rmsnorm", dst, x)
	d := x.Cols()
	if w.Numel() != d {
		panic(fmt.Sprintf("tensor: rmsnorm of %v with weight %v", x.Shape, w.Shape))
	}
	c.rows = rowJob{op: rmsnormRow, dst: dst.F32(), x: x.F32(), w: vector(w, &c.widened), d: d, eps: eps}
	c.rowsParallel(x.Rows(), d)
}

func siluMulRow(j *rowJob, i int) {
	g := j.x[i*j.d : (i+1)*j.d]
	u := j.y[i*j.d : (i+1)*j.d]
	out := j.dst[i*j.d : (i+1)*j.d]
	for k, v := range g {
		out[k] = v / (1 + float32(math.Exp(float64(-v)))) * u[k]
	}
}

func (c *CPU) SiLUMul(dst, gate, up *Tensor) {
	sameShape("silu·mul", dst, gate)
	sameShape("silu·mul", gate, up)
	d := gate.Cols()
	c.rows = rowJob{op: siluMulRow, dst: dst.F32(), x: gate.F32(), y: up.F32(), d: d}
	c.rowsParallel(gate.Rows(), d)
}

func addRow(j *rowJob, i int) {
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
	d := a.Cols()
	c.rows = rowJob{op: addRow, dst: dst.F32(), x: a.F32(), y: b.F32(), d: d}
	c.rowsParallel(a.Rows(), d)
}

func softmaxRow(j *rowJob, i int) {
	softmax(j.dst[i*j.d : (i+1)*j.d])
}

// softmax normalises x in place; exp is taken of x − max so that no term overflows.
func softmax(x []float32) {
	if len(x) == 0 {
		return
	}
	m := x[0]
	for _, v := range x[1:] {
		if v > m {
			m = v
		}
	}
	var sum float32
	for k, v := range x {
		e := float32(math.Exp(float64(v - m)))
		x[k] = e
		sum += e
	}
	inv := 1 / sum
	for k := range x {
		x[k] *= inv
	}
}

func (c *CPU) Softmax(x *Tensor) {
	d := x.Cols()
	c.rows = rowJob{op: softmaxRow, dst: x.F32(), d: d}
	c.rowsParallel(x.Rows(), d)
}

// ropeJob rotates the heads of rows [lo, hi); cos and sin are per-worker tables of one position.
type ropeJob struct {
	x        []float32
	pos      []int32
	invFreq  []float32
	heads, d int
	cos, sin [][]float32
}

func (j *ropeJob) run(worker, lo, hi int) {
	half := j.d / 2
	if len(j.cos[worker]) < half {
		j.cos[worker] = make([]float32, half)
		j.sin[worker] = make([]float32, half)
	}
	cos, sin := j.cos[worker][:half], j.sin[worker][:half]
	for i := lo; i < hi; i++ {
		p := float32(j.pos[i])
		for k, f := range j.invFreq {
			// The angle is rounded to F32 before cos and sin, as Hugging Face computes it.
			a := float64(f * p)
			cos[k] = float32(math.Cos(a))
			sin[k] = float32(math.Sin(a))
		}
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
	if len(x.Shape) != 3 || x.Shape[0] != len(pos) || 2*len(invFreq) != x.Shape[2] {
		panic(fmt.Sprintf("tensor: rope of %v with %d positions and %d frequencies", x.Shape, len(pos), len(invFreq)))
	}
	c.rope.x, c.rope.pos, c.rope.invFreq = x.F32(), pos, invFreq
	c.rope.heads, c.rope.d = x.Shape[1], x.Shape[2]
	c.pool.parallel(len(pos), 1, &c.rope)
}
