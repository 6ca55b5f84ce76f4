package gguf

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Builder assembles a GGUF file (version 3) in memory: metadata in the order added, then the
// tensor table and the data, each tensor aligned to 32 bytes or to general.alignment.
type Builder struct {
	meta    []byte // encoded metadata entries
	nMeta   int
	align   int64
	tensors []Tensor
	data    [][]byte
}

// Add appends a metadata entry. v is uint8 … float64, bool or string, or a slice of one of them
// (an array).
func (b *Builder) Add(key string, v any) {
	t, enc, ok := encodeValue(v)
	if !ok {
		panic(fmt.Sprintf("gguf: Builder.Add(%q): unsupported value type %T", key, v))
	}
	if a, ok := v.(uint32); key == "general.alignment" && ok {
		b.align = int64(a)
	}
	b.meta = appendString(b.meta, key)
	b.meta = binary.LittleEndian.AppendUint32(b.meta, uint32(t))
	b.meta = append(b.meta, enc...)
	b.nMeta++
}

// AddTensor appends a tensor of type t with ggml-order dims and its encoded bytes.
func (b *Builder) AddTensor(name string, dims []int, t TensorType, data []byte) {
	b.tensors = append(b.tensors, Tensor{Name: name, Dims: dims, Type: t, Size: int64(len(data))})
	b.data = append(b.data, data)
}

// Bytes encodes the file.
func (b *Builder) Bytes() []byte {
	align := b.align
	if align <= 0 {
		align = 32
	}
	le := binary.LittleEndian
	out := le.AppendUint32([]byte("GGUF"), 3)
	out = le.AppendUint64(out, uint64(len(b.tensors)))
	out = le.AppendUint64(out, uint64(b.nMeta))
	out = append(out, b.meta...)
	var off int64
	for _, t := range b.tensors {
		out = appendString(out, t.Name)
		out = le.AppendUint32(out, uint32(len(t.Dims)))
		for _, d := range t.Dims {
			out = le.AppendUint64(out, uint64(d))
		}
		out = le.AppendUint32(out, uint32(t.Type))
		out = le.AppendUint64(out, uint64(off))
		off = (off + t.Size + align - 1) / align * align
	}
	pad := func() {
		for int64(len(out))%align != 0 {
			out = append(out, 0)
		}
	}
	pad()
	for _, d := range b.data {
		out = append(out, d...)
		pad()
	}
	return out
}

func appendString(out []byte, s string) []byte {
	return append(binary.LittleEndian.AppendUint64(out, uint64(len(s))), s...)
}

// encodeValue encodes a scalar or an array value.
func encodeValue(v any) (ValueType, []byte, bool) {
	if t, enc, ok := encodeScalar(v); ok {
		return t, enc, true
	}
	var et ValueType
	var elems []any
	switch a := v.(type) {
	case []string:
		et, elems = TypeString, anys(a)
	case []bool:
		et, elems = TypeBool, anys(a)
	case []uint8:
		et, elems = TypeUint8, anys(a)
	case []int8:
		et, elems = TypeInt8, anys(a)
	case []uint16:
		et, elems = TypeUint16, anys(a)
	case []int16:
		et, elems = TypeInt16, anys(a)
	case []uint32:
		et, elems = TypeUint32, anys(a)
	case []int32:
		et, elems = TypeInt32, anys(a)
	case []float32:
		et, elems = TypeFloat32, anys(a)
	case []uint64:
		et, elems = TypeUint64, anys(a)
	case []int64:
		et, elems = TypeInt64, anys(a)
	case []float64:
		et, elems = TypeFloat64, anys(a)
	default:
		return 0, nil, false
	}
	out := binary.LittleEndian.AppendUint32(nil, uint32(et))
	out = binary.LittleEndian.AppendUint64(out, uint64(len(elems)))
	for _, e := range elems {
		_, enc, _ := encodeScalar(e)
		out = append(out, enc...)
	}
	return TypeArray, out, true
}

func anys[T any](a []T) []any {
	out := make([]any, len(a))
	for i, x := range a {
		out[i] = x
	}
	return out
}

func encodeScalar(v any) (ValueType, []byte, bool) {
	le := binary.LittleEndian
	switch x := v.(type) {
	case uint8:
		return TypeUint8, []byte{x}, true
	case int8:
		return TypeInt8, []byte{byte(x)}, true
	case bool:
		if x {
			return TypeBool, []byte{1}, true
		}
		return TypeBool, []byte{0}, true
	case uint16:
		return TypeUint16, le.AppendUint16(nil, x), true
	case int16:
		return TypeInt16, le.AppendUint16(nil, uint16(x)), true
	case uint32:
		return TypeUint32, le.AppendUint32(nil, x), true
	case int32:
		return TypeInt32, le.AppendUint32(nil, uint32(x)), true
	case float32:
		return TypeFloat32, le.AppendUint32(nil, math.Float32bits(x)), true
	case uint64:
		return TypeUint64, le.AppendUint64(nil, x), true
	case int64:
		return TypeInt64, le.AppendUint64(nil, uint64(x)), true
	case float64:
		return TypeFloat64, le.AppendUint64(nil, math.Float64bits(x)), true
	case string:
		return TypeString, appendString(nil, x), true
	}
	return 0, nil, false
}
