// Package gguf reads GGUF files, llama.cpp's container for models and control vectors: the
// metadata (typed key-value pairs) and the tensor table, with every count, length, offset and
// size checked against the file before use, so a damaged or hostile file is an error that names
// the field at fault, never a panic or a read past the end.
//
// Layout (little-endian; version 2 and 3): magic "GGUF", version u32, tensor count u64,
// metadata count u64; each metadata entry is a string key (u64 length + bytes), a value type u32
// and the value; then per tensor: name, n_dims u32, dims u64 × n_dims (innermost first), type
// u32, offset u64 relative to the data section, which begins at the next multiple of
// general.alignment (default 32) after the tensor table.
package gguf

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"os"

	"golang.org/x/sys/unix"
)

// ValueType is a metadata value's type tag.
type ValueType uint32

const (
	TypeUint8 ValueType = iota
	TypeInt8
	TypeUint16
	TypeInt16
	TypeUint32
	TypeInt32
	TypeFloat32
	TypeBool
	TypeString
	TypeArray
	TypeUint64
	TypeInt64
	TypeFloat64
)

var valueTypeNames = [...]string{"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64"}

func (t ValueType) String() string {
	if int(t) < len(valueTypeNames) {
		return valueTypeNames[t]
	}
	return fmt.Sprintf("type %d", uint32(t))
}

// scalarSize is the encoded size of a fixed-size value type, 0 for string and array.
func (t ValueType) scalarSize() int {
	switch t {
	case TypeUint8, TypeInt8, TypeBool:
		return 1
	case TypeUint16, TypeInt16:
		return 2
	case TypeUint32, TypeInt32, TypeFloat32:
		return 4
	case TypeUint64, TypeInt64, TypeFloat64:
		return 8
	}
	return 0
}

// Value is one metadata value. Scalars are held as their Go type (uint8 … float64, bool,
// string); arrays as a typed slice ([]string, []int32, []float32, []uint8, …).
type Value struct {
	Type     ValueType
	ElemType ValueType // for arrays
	V        any
}

// Tensor is one entry of the tensor table.
type Tensor struct {
	Name   string
	Dims   []int // ggml order: Dims[0] is the innermost (contiguous) dimension
	Type   TensorType
	Offset int64 // from the start of the data section
	Size   int64 // bytes
}

// Elements is the product of the dimensions.
func (t *Tensor) Elements() int64 {
	n := int64(1)
	for _, d := range t.Dims {
		n *= int64(d)
	}
	return n
}

// File is a parsed GGUF file. Data holds the whole file (memory-mapped by Open); a tensor's bytes
// are Data[DataStart+Offset:][:Size].
type File struct {
	Path      string
	Version   uint32
	Keys      []string // metadata keys in file order
	Meta      map[string]Value
	Tensors   []Tensor
	Alignment int64
	DataStart int64
	Data      []byte

	byName map[string]int
	mapped bool
}

// Limits that keep a hostile header from making the reader allocate far more than the file holds.
const (
	maxDims      = 4       // GGML_MAX_DIMS
	maxStringLen = 1 << 30 // one metadata string or tensor name
)

// Open memory-maps path and parses it. Errors name the file.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		return nil, fmt.Errorf("%s: is a directory, not a GGUF file", path)
	}
	if st.Size() < 4 {
		return nil, fmt.Errorf("%s: %d bytes, too short for a GGUF file", path, st.Size())
	}
	if st.Size() > math.MaxInt {
		return nil, fmt.Errorf("%s: too large to map", path)
	}
	data, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("%s: mmap: %v", path, err)
	}
	g, err := Parse(data)
	if err != nil {
		unix.Munmap(data)
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	g.Path, g.mapped = path, true
	return g, nil
}

// Close unmaps the file. Tensor data obtained from it must not be used afterwards.
func (g *File) Close() error {
	if !g.mapped || g.Data == nil {
		return nil
	}
	err := unix.Munmap(g.Data)
	g.Data = nil
	return err
}

// Parse reads a whole GGUF file held in data.
func Parse(data []byte) (*File, error) {
	r := &reader{b: data}
	if magic := r.bytes(4, "magic"); r.err == nil && string(magic) != "GGUF" {
		return nil, fmt.Errorf("not a GGUF file (magic %q)", magic)
	}
	g := &File{Data: data, Meta: map[string]Value{}, byName: map[string]int{}, Alignment: 32}
	g.Version = r.u32("version")
	if r.err == nil && g.Version != 2 && g.Version != 3 {
		return nil, fmt.Errorf("GGUF version %d; tiller reads versions 2 and 3", g.Version)
	}
	nTensors := r.u64("tensor count")
	nMeta := r.u64("metadata count")
	// Each metadata entry takes at least 12 bytes and each tensor entry at least 24: counts the
	// file cannot hold are refused before anything is allocated for them.
	if r.err == nil && (nMeta > uint64(len(data))/12 || nTensors > uint64(len(data))/24) {
		return nil, fmt.Errorf("header claims %d metadata entries and %d tensors, more than %d bytes can hold", nMeta, nTensors, len(data))
	}
	for i := uint64(0); i < nMeta && r.err == nil; i++ {
		key := r.str("metadata key")
		if r.err != nil {
			break
		}
		if _, dup := g.Meta[key]; dup {
			return nil, fmt.Errorf("metadata key %q appears twice", key)
		}
		v := r.value(ValueType(r.u32(key+": type")), key)
		if r.err == nil {
			g.Keys = append(g.Keys, key)
			g.Meta[key] = v
		}
	}
	if r.err != nil {
		return nil, r.err
	}
	if v, ok := g.Meta["general.alignment"]; ok {
		a, ok := v.V.(uint32)
		if !ok || a == 0 || a&(a-1) != 0 {
			return nil, fmt.Errorf("general.alignment %v (%s): want a power of two as u32", v.V, v.Type)
		}
		g.Alignment = int64(a)
	}
	g.Tensors = make([]Tensor, 0, nTensors)
	for i := uint64(0); i < nTensors && r.err == nil; i++ {
		t := Tensor{Name: r.str("tensor name")}
		what := fmt.Sprintf("tensor %q", t.Name)
		nd := r.u32(what + ": n_dims")
		if r.err == nil && (nd == 0 || nd > maxDims) {
			return nil, fmt.Errorf("%s: %d dimensions, want 1 to %d", what, nd, maxDims)
		}
		elems := uint64(1)
		for range nd {
			d := r.u64(what + ": dimension")
			hi, lo := bits.Mul64(elems, d)
			if r.err == nil && (d == 0 || hi != 0 || lo > math.MaxInt32*uint64(math.MaxInt32)) {
				return nil, fmt.Errorf("%s: dimension %d (of %d) is zero or overflows", what, d, nd)
			}
			elems = lo
			t.Dims = append(t.Dims, int(d))
		}
		t.Type = TensorType(r.u32(what + ": type"))
		off := r.u64(what + ": offset")
		if r.err != nil {
			break
		}
		size, err := t.Type.bytes(elems, uint64(t.Dims[0]))
		if err != nil {
			return nil, fmt.Errorf("%s: %v", what, err)
		}
		if off%uint64(g.Alignment) != 0 {
			return nil, fmt.Errorf("%s: offset %d is not a multiple of the alignment %d", what, off, g.Alignment)
		}
		if off > uint64(len(data)) || size > uint64(len(data)) {
			return nil, fmt.Errorf("%s: offset %d and size %d lie past the end of the file (%d bytes)", what, off, size, len(data))
		}
		t.Offset, t.Size = int64(off), int64(size)
		if _, dup := g.byName[t.Name]; dup {
			return nil, fmt.Errorf("tensor %q appears twice", t.Name)
		}
		g.byName[t.Name] = len(g.Tensors)
		g.Tensors = append(g.Tensors, t)
	}
	if r.err != nil {
		return nil, r.err
	}
	g.DataStart = (int64(r.off) + g.Alignment - 1) / g.Alignment * g.Alignment
	for _, t := range g.Tensors {
		if t.Size > int64(len(data))-g.DataStart || t.Offset > int64(len(data))-g.DataStart-t.Size {
			return nil, fmt.Errorf("tensor %q: bytes %d to %d of the data section lie past the end of the file (the data section has %d bytes)",
				t.Name, t.Offset, t.Offset+t.Size, max(int64(len(data))-g.DataStart, 0))
		}
	}
	return g, nil
}

// Tensor returns the named tensor's entry.
func (g *File) Tensor(name string) (*Tensor, bool) {
	i, ok := g.byName[name]
	if !ok {
		return nil, false
	}
	return &g.Tensors[i], true
}

// Bytes returns a tensor's bytes (a view of the file).
func (g *File) Bytes(t *Tensor) []byte {
	start := g.DataStart + t.Offset
	return g.Data[start : start+t.Size : start+t.Size]
}

// Release tells the kernel that a tensor's bytes will not be read again (after a copy of it was
// made), so its pages leave memory; reading them later reads the file again. The pages at either
// end, which may hold neighbours, stay.
func (g *File) Release(t *Tensor) {
	if !g.mapped || g.Data == nil {
		return
	}
	page := int64(os.Getpagesize())
	start := (g.DataStart + t.Offset + page - 1) / page * page
	end := (g.DataStart + t.Offset + t.Size) / page * page
	if end > start {
		_ = unix.Madvise(g.Data[start:end], unix.MADV_DONTNEED) // only a hint
	}
}

// reader decodes little-endian fields, remembering the first error, which names the field.
type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) fail(format string, a ...any) {
	if r.err == nil {
		r.err = fmt.Errorf(format, a...)
	}
}

func (r *reader) bytes(n uint64, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)-r.off) {
		r.fail("%s: needs %d bytes at offset %d, the file has %d", what, n, r.off, len(r.b))
		return nil
	}
	s := r.b[r.off : r.off+int(n)]
	r.off += int(n)
	return s
}

func (r *reader) u32(what string) uint32 {
	if b := r.bytes(4, what); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

func (r *reader) u64(what string) uint64 {
	if b := r.bytes(8, what); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

func (r *reader) str(what string) string {
	n := r.u64(what + ": length")
	if r.err == nil && n > maxStringLen {
		r.fail("%s: a string of %d bytes", what, n)
	}
	return string(r.bytes(n, what))
}

// value reads one value of type t; arrays of arrays are refused (no GGUF writer emits them for
// the keys tiller reads, and they would let a small file describe deep structures).
func (r *reader) value(t ValueType, key string) Value {
	if r.err != nil {
		return Value{}
	}
	if t == TypeArray {
		et := ValueType(r.u32(key + ": array element type"))
		n := r.u64(key + ": array length")
		if r.err != nil {
			return Value{}
		}
		size := et.scalarSize()
		switch {
		case et == TypeArray:
			r.fail("%s: an array of arrays", key)
		case et == TypeString && n > uint64(len(r.b)-r.off)/8:
			r.fail("%s: %d strings cannot fit in the %d bytes left", key, n, len(r.b)-r.off)
		case et != TypeString && size == 0:
			r.fail("%s: unknown array element type %d", key, uint32(et))
		case et != TypeString && n > uint64(len(r.b)-r.off)/uint64(size):
			r.fail("%s: %d elements of %s cannot fit in the %d bytes left", key, n, et, len(r.b)-r.off)
		}
		if r.err != nil {
			return Value{}
		}
		return Value{Type: TypeArray, ElemType: et, V: r.array(et, int(n), key)}
	}
	v := Value{Type: t}
	switch t {
	case TypeString:
		v.V = r.str(key)
	case TypeBool:
		b := r.bytes(1, key)
		if b != nil && b[0] > 1 {
			r.fail("%s: bool value %d", key, b[0])
		}
		v.V = b != nil && b[0] == 1
	default:
		if t.scalarSize() == 0 {
			r.fail("%s: unknown value type %d", key, uint32(t))
			return Value{}
		}
		v.V = scalar(t, r.bytes(uint64(t.scalarSize()), key))
	}
	return v
}

func scalar(t ValueType, b []byte) any {
	if b == nil {
		return nil
	}
	le := binary.LittleEndian
	switch t {
	case TypeUint8:
		return b[0]
	case TypeInt8:
		return int8(b[0])
	case TypeUint16:
		return le.Uint16(b)
	case TypeInt16:
		return int16(le.Uint16(b))
	case TypeUint32:
		return le.Uint32(b)
	case TypeInt32:
		return int32(le.Uint32(b))
	case TypeFloat32:
		return math.Float32frombits(le.Uint32(b))
	case TypeUint64:
		return le.Uint64(b)
	case TypeInt64:
		return int64(le.Uint64(b))
	case TypeFloat64:
		return math.Float64frombits(le.Uint64(b))
	}
	return nil
}

// array reads n elements of et into a typed slice.
func (r *reader) array(et ValueType, n int, key string) any {
	switch et {
	case TypeString:
		out := make([]string, 0, n)
		for i := 0; i < n && r.err == nil; i++ {
			out = append(out, r.str(key))
		}
		return out
	case TypeBool:
		out := make([]bool, n)
		for i, b := range r.bytes(uint64(n), key) {
			out[i] = b != 0
		}
		return out
	}
	size := et.scalarSize()
	b := r.bytes(uint64(n)*uint64(size), key)
	if b == nil {
		return nil
	}
	switch et {
	case TypeUint8:
		return append([]uint8(nil), b...)
	case TypeInt8:
		return fill(n, func(i int) int8 { return int8(b[i]) })
	case TypeUint16:
		return fill(n, func(i int) uint16 { return binary.LittleEndian.Uint16(b[2*i:]) })
	case TypeInt16:
		return fill(n, func(i int) int16 { return int16(binary.LittleEndian.Uint16(b[2*i:])) })
	case TypeUint32:
		return fill(n, func(i int) uint32 { return binary.LittleEndian.Uint32(b[4*i:]) })
	case TypeInt32:
		return fill(n, func(i int) int32 { return int32(binary.LittleEndian.Uint32(b[4*i:])) })
	case TypeFloat32:
		return fill(n, func(i int) float32 { return math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:])) })
	case TypeUint64:
		return fill(n, func(i int) uint64 { return binary.LittleEndian.Uint64(b[8*i:]) })
	case TypeInt64:
		return fill(n, func(i int) int64 { return int64(binary.LittleEndian.Uint64(b[8*i:])) })
	case TypeFloat64:
		return fill(n, func(i int) float64 { return math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:])) })
	}
	return nil
}

func fill[T any](n int, at func(int) T) []T {
	out := make([]T, n)
	for i := range out {
		out[i] = at(i)
	}
	return out
}
