package tensor

import "fmt"

// matmulPlainJob computes dst = x·wᵀ + bias for the weight rows [lo, hi) with one dot per output:
// each row is widened once into the worker's buffer, then dotted with every token. It serves F64
// activations, which only tests use on tiny models, so it is written to be plainly right rather
// than fast; it splits the work over weight rows as the F32 MatMul does.
type matmulPlainJob[T float] struct {
	x, dst, bias []T // x: (n, in); dst: (n, out); bias: (out) or nil
	w            *Tensor
	n, in, out   int
	dot          func(x, y []T) T
	load         func(dst []T, t *Tensor, off int)
	rows         [][]T // per worker: one widened weight row
}

func (j *matmulPlainJob[T]) run(worker, lo, hi int) {
	row := perWorker(j.rows, worker, j.in)
	for r := lo; r < hi; r++ {
		j.load(row, j.w, r*j.in)
		var b T
		if j.bias != nil {
			b = j.bias[r]
		}
		for t := 0; t < j.n; t++ {
			j.dst[t*j.out+r] = j.dot(j.x[t*j.in:(t+1)*j.in], row) + b
		}
	}
}

// matmulPlain runs MatMul (shapes already checked) with T activations and weights of any float
// dtype, F64 included.
func matmulPlain[T float](jobs *cpuJobs[T], dst, x, w, bias *Tensor) {
	activations("matmul", dst, x)
	switch w.DType {
	case F32, BF16, F16, F64:
	default:
		panic(fmt.Sprintf("tensor: matmul with %s weights", w.DType))
	}
	j := &jobs.matmul
	j.x, j.dst, j.w = elems[T](x), elems[T](dst), w
	j.n, j.in, j.out = x.Rows(), x.Cols(), w.Rows()
	j.dot, j.load = jobs.dot, jobs.load
	j.bias = nil
	if bias != nil {
		j.bias = jobs.vector(bias)
	}
	jobs.pool.parallel(j.out, matmulGrain, j)
}
