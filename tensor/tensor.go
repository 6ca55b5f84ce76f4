package tensor

import (
	"fmt"
	"unsafe"
)

// Tensor is a dense, row-major array of one dtype, in host memory or in a backend's device memory.
// On the host, Data holds the elements little-endian; for a tensor made by New it is aligned to its
// element size, and the typed views (F32, F64, U16, I32) share it without copying. In device memory,
// Data is nil and Dev is the address of the first element; the backend that allocated it owns the
// memory. Ops take destinations the caller owns.
type Tensor struct {
	Shape []int
	DType DType
	Data  []byte // host storage; nil for a device tensor
	Dev   uint64 // device address (a CUDA CUdeviceptr) of a device tensor; 0 on the host
}

// OnHost reports whether the elements are in host memory, where the typed views work.
func (t *Tensor) OnHost() bool { return t.Dev == 0 }

// New allocates a zeroed tensor. Storage is allocated as 8-byte words so that every typed view is
// aligned.
func New(dtype DType, shape ...int) *Tensor {
	n := numel(shape)
	words := make([]uint64, (n*dtype.Size()+7)/8)
	var data []byte
	if len(words) > 0 {
		data = unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), n*dtype.Size())
	}
	return &Tensor{Shape: append([]int(nil), shape...), DType: dtype, Data: data}
}

// FromF32 makes an F32 tensor that shares v.
func FromF32(v []float32, shape ...int) *Tensor {
	if numel(shape) != len(v) {
		panic(fmt.Sprintf("tensor: FromF32 with %d values for shape %v", len(v), shape))
	}
	var data []byte
	if len(v) > 0 {
		data = unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 4*len(v))
	}
	return &Tensor{Shape: append([]int(nil), shape...), DType: F32, Data: data}
}

// FromF64 makes an F64 tensor that shares v.
func FromF64(v []float64, shape ...int) *Tensor {
	if numel(shape) != len(v) {
		panic(fmt.Sprintf("tensor: FromF64 with %d values for shape %v", len(v), shape))
	}
	var data []byte
	if len(v) > 0 {
		data = unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 8*len(v))
	}
	return &Tensor{Shape: append([]int(nil), shape...), DType: F64, Data: data}
}

// Wrap makes a tensor over existing bytes (a memory-mapped checkpoint, say). It returns an error
// when the byte count disagrees with the shape; callers check alignment with Aligned.
func Wrap(dtype DType, data []byte, shape ...int) (*Tensor, error) {
	if want := numel(shape) * dtype.Size(); len(data) != want {
		return nil, fmt.Errorf("%d bytes for %s%v, want %d", len(data), dtype, shape, want)
	}
	return &Tensor{Shape: append([]int(nil), shape...), DType: dtype, Data: data}, nil
}

func numel(shape []int) int {
	n := 1
	for _, d := range shape {
		if d < 0 {
			panic(fmt.Sprintf("tensor: negative dimension in shape %v", shape))
		}
		n *= d
	}
	return n
}

// Numel is the number of elements.
func (t *Tensor) Numel() int { return numel(t.Shape) }

// Rows is the product of every dimension but the last: the number of vectors a row-wise op sees.
func (t *Tensor) Rows() int {
	if len(t.Shape) == 0 {
		return 1
	}
	return numel(t.Shape[:len(t.Shape)-1])
}

// Cols is the last dimension.
func (t *Tensor) Cols() int {
	if len(t.Shape) == 0 {
		return 1
	}
	return t.Shape[len(t.Shape)-1]
}

// Aligned reports whether Data starts on a multiple of the element size, which the typed views need.
func (t *Tensor) Aligned() bool {
	if len(t.Data) == 0 {
		return true
	}
	return uintptr(unsafe.Pointer(&t.Data[0]))%uintptr(t.DType.Size()) == 0
}

// F32 views the elements of an F32 tensor.
func (t *Tensor) F32() []float32 {
	t.must(F32)
	if len(t.Data) == 0 {
		return nil
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&t.Data[0])), len(t.Data)/4)
}

// F64 views the elements of an F64 tensor.
func (t *Tensor) F64() []float64 {
	t.must(F64)
	if len(t.Data) == 0 {
		return nil
	}
	return unsafe.Slice((*float64)(unsafe.Pointer(&t.Data[0])), len(t.Data)/8)
}

// U16 views the raw 16-bit elements of a BF16 or F16 tensor.
func (t *Tensor) U16() []uint16 {
	t.mustHost()
	if t.DType != BF16 && t.DType != F16 {
		panic(fmt.Sprintf("tensor: U16 view of a %s tensor", t.DType))
	}
	if len(t.Data) == 0 {
		return nil
	}
	return unsafe.Slice((*uint16)(unsafe.Pointer(&t.Data[0])), len(t.Data)/2)
}

// I32 views the elements of an I32 tensor.
func (t *Tensor) I32() []int32 {
	t.must(I32)
	if len(t.Data) == 0 {
		return nil
	}
	return unsafe.Slice((*int32)(unsafe.Pointer(&t.Data[0])), len(t.Data)/4)
}

func (t *Tensor) must(d DType) {
	t.mustHost()
	if t.DType != d {
		panic(fmt.Sprintf("tensor: %s view of a %s tensor", d, t.DType))
	}
}

func (t *Tensor) mustHost() {
	if t.Dev != 0 {
		panic(fmt.Sprintf("tensor: host view of a %v tensor in device memory", t))
	}
}

// Reshape returns a view with another shape and the same elements.
func (t *Tensor) Reshape(shape ...int) *Tensor {
	if numel(shape) != t.Numel() {
		panic(fmt.Sprintf("tensor: reshape %v to %v", t.Shape, shape))
	}
	return &Tensor{Shape: append([]int(nil), shape...), DType: t.DType, Data: t.Data, Dev: t.Dev}
}

// Slice returns a view of rows [lo, hi) along the first dimension.
func (t *Tensor) Slice(lo, hi int) *Tensor {
	if len(t.Shape) == 0 || lo < 0 || hi > t.Shape[0] || lo > hi {
		panic(fmt.Sprintf("tensor: slice [%d:%d] of shape %v", lo, hi, t.Shape))
	}
	row := numel(t.Shape[1:]) * t.DType.Size()
	shape := append([]int{hi - lo}, t.Shape[1:]...)
	if t.Dev != 0 {
		return &Tensor{Shape: shape, DType: t.DType, Dev: t.Dev + uint64(lo*row)}
	}
	return &Tensor{Shape: shape, DType: t.DType, Data: t.Data[lo*row : hi*row]}
}

// ToF32 returns the elements of a host tensor as float32 in a new slice: widened exactly, except
// that F64 values are rounded to nearest.
func (t *Tensor) ToF32() []float32 {
	t.mustHost()
	out := make([]float32, t.Numel())
	switch t.DType {
	case F32:
		copy(out, t.F32())
	case BF16:
		for i, h := range t.U16() {
			out[i] = F32FromBF16(h)
		}
	case F16:
		for i, h := range t.U16() {
			out[i] = F32FromF16(h)
		}
	case I32:
		for i, v := range t.I32() {
			out[i] = float32(v)
		}
	case F64:
		for i, v := range t.F64() {
			out[i] = float32(v)
		}
	}
	return out
}

// ToF64 returns the elements of a host tensor widened exactly to float64 in a new slice.
func (t *Tensor) ToF64() []float64 {
	t.mustHost()
	out := make([]float64, t.Numel())
	switch t.DType {
	case F64:
		copy(out, t.F64())
	case I32:
		for i, v := range t.I32() {
			out[i] = float64(v)
		}
	default:
		for i, v := range t.ToF32() {
			out[i] = float64(v)
		}
	}
	return out
}

// Convert returns a new tensor of dtype d holding t's values, rounded to nearest even where d is
// narrower. An F64 source goes to BF16 and F16 through F32, so in rare ties the result can differ
// from a single rounding in its last bit; to I32 values are truncated toward zero.
func (t *Tensor) Convert(d DType) *Tensor {
	out := New(d, t.Shape...)
	switch d {
	case F64:
		copy(out.F64(), t.ToF64())
		return out
	case I32:
		n := out.I32()
		for i, f := range t.ToF64() {
			n[i] = int32(f)
		}
		return out
	}
	v := t.ToF32()
	switch d {
	case F32:
		copy(out.F32(), v)
	case BF16:
		h := out.U16()
		for i, f := range v {
			h[i] = BF16FromF32(f)
		}
	case F16:
		h := out.U16()
		for i, f := range v {
			h[i] = F16FromF32(f)
		}
	}
	return out
}

// String prints the dtype and shape, e.g. "BF16[4096 128256]".
func (t *Tensor) String() string { return fmt.Sprintf("%s%v", t.DType, t.Shape) }
