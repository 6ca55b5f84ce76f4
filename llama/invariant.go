package llama

import "github.com/tillerlm/tiller/tensor"

// invariantRows is the batch of rows a deterministic runner hands a backend's MatMul at a time
// when the backend is not BatchInvariant itself (the CPU): a multiple of 4 below the CPU's GEMM
// threshold (28 tokens), so that every row goes through the same kernel of its GEMV — four tokens
// at a time, each with accumulators of its own — whatever batch it came in and wherever it sat.
// Rows past a multiple of 4 are padded with copies of the chunk's first row.
const invariantRows = 24

// product is the backend's MatMul, or, on a deterministic runner over a backend that is not
// BatchInvariant, the same product in chunks of invariantRows rows padded to whole fours: each
// row's result then does not depend on the rest of the batch.
func (r *Runner) product(dst, x, w, bias *tensor.Tensor) {
	n := x.Rows()
	if !r.invariant || x.DType != tensor.F32 { // F64 products are plain loops, invariant already
		r.Backend.MatMul(dst, x, w, bias)
		return
	}
	for lo := 0; lo < n; lo += invariantRows {
		hi := min(lo+invariantRows, n)
		k := hi - lo
		if k%4 == 0 {
			r.Backend.MatMul(dst.Slice(lo, hi), x.Slice(lo, hi), w, bias)
			continue
		}
		pad := (k + 3) &^ 3
		xs := r.flat(&r.store.padX, pad, x.Cols())
		ys := r.flat(&r.store.padY, pad, dst.Cols())
		r.padRows = r.padRows[:0]
		for i := 0; i < pad; i++ {
			row := lo
			if i < k {
				row = lo + i
			}
			r.padRows = append(r.padRows, int32(row))
		}
		r.gatherRows(xs, x, r.padRows)
		r.Backend.MatMul(ys, xs, w, bias)
		r.copyRows(dst.Slice(lo, hi), ys.Slice(0, k))
	}
}

// gatherRows writes dst[i] = x[rows[i]] in the backend's memory.
func (r *Runner) gatherRows(dst, x *tensor.Tensor, rows []int32) {
	if x.OnHost() {
		w := x.Cols()
		for i, row := range rows {
			copy(dst.F32()[i*w:(i+1)*w], x.F32()[int(row)*w:(int(row)+1)*w])
		}
		return
	}
	r.Backend.Embedding(dst, x, rows)
}

// copyRows copies src into dst, of one shape, in the backend's memory.
func (r *Runner) copyRows(dst, src *tensor.Tensor) {
	if dst.OnHost() {
		copy(dst.F32(), src.F32())
		return
	}
	r.Backend.(DeviceMemory).Copy(dst, src)
}

// flat is a (rows, cols) F32 tensor cut from the front of *buf, which grows (in the backend's
// memory) to hold invariantRows rows of the widest product seen.
func (r *Runner) flat(buf **tensor.Tensor, rows, cols int) *tensor.Tensor {
	if *buf == nil || (*buf).Numel() < rows*cols {
		if d, ok := r.Backend.(DeviceMemory); ok && *buf != nil && !(*buf).OnHost() {
			d.Free(*buf)
		}
		*buf = r.Backend.Alloc(tensor.F32, invariantRows*cols)
	}
	return (*buf).Slice(0, rows*cols).Reshape(rows, cols)
}
