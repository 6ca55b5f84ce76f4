package gguf

import (
	"fmt"
	"math/bits"
)

// TensorType is ggml's type of a tensor's elements: a plain number format or a block
// quantization.
type TensorType uint32

// The types tiller dequantizes; the table below knows the sizes of the others, so files holding
// them still parse and the error names the type.
const (
	F32  TensorType = 0
	F16  TensorType = 1
	Q4_0 TensorType = 2
	Q4_1 TensorType = 3
	Q5_0 TensorType = 6
	Q5_1 TensorType = 7
	Q8_0 TensorType = 8
	Q4_K TensorType = 12
	Q5_K TensorType = 13
	Q6_K TensorType = 14
	BF16 TensorType = 30
)

// typeInfo is a type's name, elements per block and bytes per block (ggml's type traits, as
// gguf-py's GGML_QUANT_SIZES lists them).
var typeInfo = map[TensorType]struct {
	name        string
	block, size uint64
}{
	0: {"F32", 1, 4}, 1: {"F16", 1, 2}, 2: {"Q4_0", 32, 18}, 3: {"Q4_1", 32, 20},
	6: {"Q5_0", 32, 22}, 7: {"Q5_1", 32, 24}, 8: {"Q8_0", 32, 34}, 9: {"Q8_1", 32, 40},
	10: {"Q2_K", 256, 84}, 11: {"Q3_K", 256, 110}, 12: {"Q4_K", 256, 144}, 13: {"Q5_K", 256, 176},
	14: {"Q6_K", 256, 210}, 15: {"Q8_K", 256, 292}, 16: {"IQ2_XXS", 256, 66}, 17: {"IQ2_XS", 256, 74},
	18: {"IQ3_XXS", 256, 98}, 19: {"IQ1_S", 256, 50}, 20: {"IQ4_NL", 32, 18}, 21: {"IQ3_S", 256, 110},
	22: {"IQ2_S", 256, 82}, 23: {"IQ4_XS", 256, 136}, 24: {"I8", 1, 1}, 25: {"I16", 1, 2},
	26: {"I32", 1, 4}, 27: {"I64", 1, 8}, 28: {"F64", 1, 8}, 29: {"IQ1_M", 256, 56},
	30: {"BF16", 1, 2}, 34: {"TQ1_0", 256, 54}, 35: {"TQ2_0", 256, 66}, 39: {"MXFP4", 32, 17},
}

func (t TensorType) String() string {
	if info, ok := typeInfo[t]; ok {
		return info.name
	}
	return fmt.Sprintf("type %d", uint32(t))
}

// BlockSize is the number of elements a block of t holds (1 for plain types).
func (t TensorType) BlockSize() int { return int(typeInfo[t].block) }

// bytes is the size of elems elements of t whose innermost dimension is inner, which blocks must
// divide.
func (t TensorType) bytes(elems, inner uint64) (uint64, error) {
	info, ok := typeInfo[t]
	if !ok {
		return 0, fmt.Errorf("unknown tensor type %d", uint32(t))
	}
	if inner%info.block != 0 {
		return 0, fmt.Errorf("%s blocks of %d elements do not divide the innermost dimension %d", info.name, info.block, inner)
	}
	hi, lo := bits.Mul64(elems/info.block, info.size)
	if hi != 0 {
		return 0, fmt.Errorf("%d elements of %s overflow a size", elems, info.name)
	}
	return lo, nil
}
