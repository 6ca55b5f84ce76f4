package tensor

import (
	"fmt"
	"unsafe"
)

// float is the scalar type of activations (and gradients) on the CPU: float32 for inference and
// attribution, float64 where a test needs exactness, such as the finite-difference checks of the
// backward pass. Every op's math is written once over it; the F32 fast paths of MatMul are the one
// exception.
type float interface{ float32 | float64 }

// dtypeOf is the DType whose elements are T.
func dtypeOf[T float]() DType {
	var z T
	if unsafe.Sizeof(z) == 8 {
		return F64
	}
	return F32
}

// elems views the elements of an activation tensor whose dtype is T's.
func elems[T float](t *Tensor) []T {
	t.must(dtypeOf[T]())
	if len(t.Data) == 0 {
		return nil
	}
	var z T
	return unsafe.Slice((*T)(unsafe.Pointer(&t.Data[0])), len(t.Data)/int(unsafe.Sizeof(z)))
}

// optElems is elems, or nil for a nil tensor: a gradient output the caller does not want.
func optElems[T float](t *Tensor) []T {
	if t == nil {
		return nil
	}
	return elems[T](t)
}

// activations returns the dtype every non-nil tensor of an op shares, F32 or F64, and panics
// otherwise: the CPU computes in the activations' dtype, so one call never mixes them.
func activations(op string, ts ...*Tensor) DType {
	d := DType(255)
	for _, t := range ts {
		if t == nil {
			continue
		}
		if d == 255 {
			d = t.DType
		}
		if t.DType != d || (d != F32 && d != F64) {
			panic(fmt.Sprintf("tensor: %s of %s; activations and gradients are all F32 or all F64", op, dtypes(ts)))
		}
	}
	if d == 255 {
		return F32
	}
	return d
}

func dtypes(ts []*Tensor) string {
	s := ""
	for i, t := range ts {
		if i > 0 {
			s += ", "
		}
		if t == nil {
			s += "nil"
		} else {
			s += t.String()
		}
	}
	return s
}

// loadF32 writes elements [off, off+len(dst)) of t (F32, BF16, F16 or F64) into dst as F32:
// exactly, through the widening kernels of dot.go, or rounded to nearest from F64.
func loadF32(dst []float32, t *Tensor, off int) {
	n := len(dst)
	switch t.DType {
	case F32:
		copy(dst, t.F32()[off:off+n])
	case BF16:
		widenBF16(dst, t.U16()[off:off+n])
	case F16:
		widenF16(dst, t.U16()[off:off+n])
	case F64:
		for k, v := range t.F64()[off : off+n] {
			dst[k] = float32(v)
		}
	default:
		panic(fmt.Sprintf("tensor: %s weights", t.DType))
	}
}

// loadF64 writes elements [off, off+len(dst)) of t (F32, BF16, F16 or F64) into dst, widened
// exactly.
func loadF64(dst []float64, t *Tensor, off int) {
	n := len(dst)
	switch t.DType {
	case F32:
		for k, v := range t.F32()[off : off+n] {
			dst[k] = float64(v)
		}
	case BF16:
		for k, h := range t.U16()[off : off+n] {
			dst[k] = float64(F32FromBF16(h))
		}
	case F16:
		tab := f16Table()
		for k, h := range t.U16()[off : off+n] {
			dst[k] = float64(tab[h])
		}
	case F64:
		copy(dst, t.F64()[off:off+n])
	default:
		panic(fmt.Sprintf("tensor: %s weights", t.DType))
	}
}

// dotGo is Σ x[k]·y[k], in order: the F64 dot, where speed does not matter and exactness does.
func dotGo[T float](x, y []T) T {
	y = y[:len(x)]
	var s T
	for k, v := range x {
		s += v * y[k]
	}
	return s
}

// axpy is y += a·x.
func axpy[T float](y []T, a T, x []T) {
	x = x[:len(y)]
	for k := range y {
		y[k] += a * x[k]
	}
}

// grow returns (*s)[:n], reallocating *s when it is shorter: scratch that lives in the backend, so
// ops of a repeated shape allocate nothing. It at least doubles, so that a scratch sized by a
// growing position reallocates a logarithmic number of times.
func grow[E any](s *[]E, n int) []E {
	if cap(*s) < n {
		*s = make([]E, n, max(n, 2*cap(*s)))
	}
	return (*s)[:n]
}

// perWorker returns worker w's scratch of n elements from a per-worker set.
func perWorker[E any](set [][]E, w, n int) []E {
	return grow(&set[w], n)
}
