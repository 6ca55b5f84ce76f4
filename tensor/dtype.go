// Package tensor holds the Tensor type, its element types, the Backend interface that the model is
// written against, and the pure-Go CPU backend that is the reference for every other backend.
package tensor

import (
	"fmt"
	"math"

	"github.com/x448/float16"
)

// DType is the element type of a tensor.
type DType uint8

const (
	F32  DType = iota // IEEE-754 binary32
	BF16              // bfloat16: the top 16 bits of a binary32
	F16               // IEEE-754 binary16
	I32               // two's-complement 32-bit integer
	F64               // IEEE-754 binary64: CPU activations and gradients where a test needs exactness
)

// Size is the number of bytes of one element.
func (d DType) Size() int {
	switch d {
	case F32, I32:
		return 4
	case BF16, F16:
		return 2
	case F64:
		return 8
	}
	panic(fmt.Sprintf("tensor: unknown dtype %d", d))
}

// String is the dtype's name as safetensors spells it.
func (d DType) String() string {
	switch d {
	case F32:
		return "F32"
	case BF16:
		return "BF16"
	case F16:
		return "F16"
	case I32:
		return "I32"
	case F64:
		return "F64"
	}
	return fmt.Sprintf("DType(%d)", d)
}

// ParseDType reads a dtype name as safetensors spells it ("F32", "BF16", "F16", "I32", "F64"), or
// the lower-case names used on the command line and in config.json ("float32", "bfloat16",
// "float16", "float64").
func ParseDType(s string) (DType, error) {
	switch s {
	case "F32", "f32", "float32":
		return F32, nil
	case "BF16", "bf16", "bfloat16":
		return BF16, nil
	case "F16", "f16", "float16":
		return F16, nil
	case "I32", "i32", "int32":
		return I32, nil
	case "F64", "f64", "float64":
		return F64, nil
	}
	return 0, fmt.Errorf("unknown dtype %q (want F32, BF16, F16, I32 or F64)", s)
}

// BF16FromF32 rounds f to the nearest bfloat16, ties to even. NaN stays NaN (quiet).
func BF16FromF32(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x40
	}
	// Adding 0x7fff plus the lowest kept bit rounds the dropped half-word to nearest, ties to even;
	// an overflow past the largest finite value carries correctly into the infinity pattern.
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// F32FromBF16 widens a bfloat16 exactly.
func F32FromBF16(h uint16) float32 {
	return math.Float32frombits(uint32(h) << 16)
}

// F16FromF32 rounds f to the nearest binary16, ties to even.
func F16FromF32(f float32) uint16 {
	return float16.Fromfloat32(f).Bits()
}

// F32FromF16 widens a binary16 exactly.
func F32FromF16(h uint16) float32 {
	return float16.Frombits(h).Float32()
}
