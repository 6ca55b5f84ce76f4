package steer

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// The GGUF control-vector format, as llama.cpp reads it (--control-vector) and repeng writes it:
//
//	magic "GGUF", version u32 (3), tensor count u64, metadata count u64 — little-endian
//	metadata: key (u64 length + UTF-8), value type u32, value
//	  general.architecture       string "controlvector"
//	  controlvector.model_hint   string, the model_type it was made for ("llama")
//	  controlvector.layer_count  u32 (repeng) or i32 (llama.cpp): the number of direction tensors
//	tensor infos: name, n_dims u32, dims u64 (innermost first), type u32 (0 = F32), offset u64
//	data: from the next multiple of general.alignment (default 32), each tensor aligned likewise
//	tensors: direction.N, F32, 1-D, hidden_size values, N >= 1
//
// BlockIndexing says how N maps onto tiller's hook points.
const BlockIndexing = "llama.cpp's block indexing: GGUF direction.N is added to the output of decoder block N (0-based), tiller's blocks.N.hook_resid_post (= blocks.N+1.hook_resid_pre); llama.cpp never steers block 0"

const (
	ggufMagic            = "GGUF"
	ggufDefaultAlignment = 32
	ggufF32              = 0
	ggufMaxCount         = 1 << 16 // more tensors or keys than any control vector has: a corrupt count
)

// GGUF metadata value types.
const (
	gU8 uint32 = iota
	gI8
	gU16
	gI16
	gU32
	gI32
	gF32
	gBool
	gString
	gArray
	gU64
	gI64
	gF64
)

func isGGUF(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	var magic [4]byte
	_, err = io.ReadFull(f, magic[:])
	return err == nil && string(magic[:]) == ggufMagic
}

// GGUFLayer is the llama.cpp block index N whose output a vector at the given hook and layer
// steers, or an error when llama.cpp cannot express it.
func GGUFLayer(hook string, layer int) (int, error) {
	n := layer
	switch hook {
	case "hook_resid_post":
	case "hook_resid_pre":
		n = layer - 1 // the input of block L is the output of block L−1
	default:
		return 0, fmt.Errorf("a vector at %s cannot be written as a GGUF control vector: llama.cpp adds only to block outputs (hook_resid_post)", hook)
	}
	if n < 1 {
		return 0, fmt.Errorf("blocks.%d.%s is the output of block %d, which llama.cpp never steers (%s)", layer, hook, n, BlockIndexing)
	}
	return n, nil
}

// WriteGGUF writes the vector as a GGUF control vector with each layer's values multiplied by
// scale (llama.cpp adds them as they are, times its own --control-vector-scaled factor).
func WriteGGUF(path string, v *Vector, scale float32) error {
	if err := v.validate(path); err != nil {
		return err
	}
	hint := v.Info.ModelType
	if hint == "" {
		hint = "llama"
	}
	type dir struct {
		n      int
		values []float32
	}
	var dirs []dir
	for _, l := range v.Layers {
		n, err := GGUFLayer(v.Hook, l.Index)
		if err != nil {
			return fmt.Errorf("%s: %v", path, err)
		}
		vals := make([]float32, len(l.Values))
		for i, x := range l.Values {
			vals[i] = x * scale
		}
		dirs = append(dirs, dir{n, vals})
	}
	var b bytes.Buffer
	w := func(x any) { binary.Write(&b, binary.LittleEndian, x) }
	str := func(s string) { w(uint64(len(s))); b.WriteString(s) }
	b.WriteString(ggufMagic)
	w(uint32(3))
	w(uint64(len(dirs)))
	w(uint64(3))
	str("general.architecture")
	w(gString)
	str("controlvector")
	str("controlvector.model_hint")
	w(gString)
	str(hint)
	str("controlvector.layer_count")
	w(gU32)
	w(uint32(len(dirs)))
	var offset uint64
	for _, d := range dirs {
		str("direction." + strconv.Itoa(d.n))
		w(uint32(1))
		w(uint64(len(d.values)))
		w(uint32(ggufF32))
		w(offset)
		offset += align(uint64(4*len(d.values)), ggufDefaultAlignment)
	}
	for b.Len()%ggufDefaultAlignment != 0 {
		b.WriteByte(0)
	}
	for _, d := range dirs {
		w(d.values)
		for b.Len()%ggufDefaultAlignment != 0 {
			b.WriteByte(0)
		}
	}
	return writeAtomic(path, b.Bytes())
}

func align(n, a uint64) uint64 { return (n + a - 1) / a * a }

// writeAtomic writes data to a temporary file beside path and renames it into place.
func writeAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("%s: %v", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// ReadGGUF reads and validates a GGUF control vector strictly: the magic and version (2 or 3),
// every metadata value well formed and no key twice, general.architecture "controlvector",
// controlvector.model_hint a string, controlvector.layer_count an i32 or u32 equal to the number
// of tensors, and only tensors direction.N (N >= 1, each once) that are F32, 1-D, all of one
// length, aligned and inside the file. The vector is at hook_resid_post of layer N (see
// BlockIndexing); its values are kept as stored, so strength 1 adds what llama.cpp adds at scale 1.
func ReadGGUF(path string) (*Vector, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	v, err := ParseGGUF(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	v.Info.Source = "gguf: " + path
	if err := v.validate(path); err != nil {
		return nil, err
	}
	return v, nil
}

// ggufReader reads little-endian values from a byte slice, remembering the first error.
type ggufReader struct {
	r   *bufio.Reader
	n   int64 // bytes read so far
	end int64
	err error
}

func (g *ggufReader) read(dst any) {
	if g.err != nil {
		return
	}
	size := int64(binary.Size(dst))
	if size > g.end-g.n {
		g.err = fmt.Errorf("truncated at byte %d", g.n)
		return
	}
	g.err = binary.Read(g.r, binary.LittleEndian, dst)
	g.n += size
}

func (g *ggufReader) u32() uint32 { var x uint32; g.read(&x); return x }
func (g *ggufReader) u64() uint64 { var x uint64; g.read(&x); return x }

func (g *ggufReader) str(what string) string {
	n := g.u64()
	if g.err != nil {
		return ""
	}
	if n > uint64(g.end-g.n) {
		g.err = fmt.Errorf("%s: string of %d bytes at byte %d runs past the end of the file", what, n, g.n)
		return ""
	}
	b := make([]byte, n)
	_, g.err = io.ReadFull(g.r, b)
	g.n += int64(n)
	return string(b)
}

// value reads one metadata value of type t and returns it as a Go value (arrays as []any).
func (g *ggufReader) value(key string, t uint32, depth int) any {
	switch t {
	case gU8:
		var x uint8
		g.read(&x)
		return x
	case gI8:
		var x int8
		g.read(&x)
		return x
	case gU16:
		var x uint16
		g.read(&x)
		return x
	case gI16:
		var x int16
		g.read(&x)
		return x
	case gU32:
		return g.u32()
	case gI32:
		var x int32
		g.read(&x)
		return x
	case gF32:
		var x float32
		g.read(&x)
		return x
	case gBool:
		var x uint8
		g.read(&x)
		if g.err == nil && x > 1 {
			g.err = fmt.Errorf("metadata %s: bool value %d", key, x)
		}
		return x == 1
	case gString:
		return g.str("metadata " + key)
	case gU64:
		return g.u64()
	case gI64:
		var x int64
		g.read(&x)
		return x
	case gF64:
		var x float64
		g.read(&x)
		return x
	case gArray:
		if depth > 4 {
			g.err = fmt.Errorf("metadata %s: arrays nested too deep", key)
			return nil
		}
		et, n := g.u32(), g.u64()
		if g.err == nil && n > uint64(g.end-g.n) {
			g.err = fmt.Errorf("metadata %s: array of %d elements runs past the end of the file", key, n)
		}
		var out []any
		for i := uint64(0); i < n && g.err == nil; i++ {
			out = append(out, g.value(key, et, depth+1))
		}
		return out
	}
	if g.err == nil {
		g.err = fmt.Errorf("metadata %s: unknown value type %d", key, t)
	}
	return nil
}

// ParseGGUF parses and validates a GGUF control vector held in memory (see ReadGGUF).
func ParseGGUF(data []byte) (*Vector, error) {
	g := &ggufReader{r: bufio.NewReader(bytes.NewReader(data)), end: int64(len(data))}
	var magic [4]byte
	g.read(&magic)
	if g.err != nil || string(magic[:]) != ggufMagic {
		return nil, fmt.Errorf("not a GGUF file (no GGUF magic)")
	}
	version := g.u32()
	if g.err == nil && version != 2 && version != 3 {
		return nil, fmt.Errorf("GGUF version %d: want 2 or 3", version)
	}
	nTensors, nKV := g.u64(), g.u64()
	if g.err != nil {
		return nil, g.err
	}
	if nTensors > ggufMaxCount || nKV > ggufMaxCount {
		return nil, fmt.Errorf("%d tensors and %d metadata keys: not a control vector (or a corrupt header)", nTensors, nKV)
	}
	kv := map[string]any{}
	types := map[string]uint32{}
	for i := uint64(0); i < nKV && g.err == nil; i++ {
		key := g.str("metadata key")
		t := g.u32()
		val := g.value(key, t, 0)
		if g.err != nil {
			break
		}
		if _, dup := kv[key]; dup {
			return nil, fmt.Errorf("metadata key %s appears twice", key)
		}
		kv[key], types[key] = val, t
	}
	if g.err != nil {
		return nil, g.err
	}
	// Required keys.
	if arch, ok := kv["general.architecture"].(string); !ok || arch != "controlvector" {
		return nil, fmt.Errorf("general.architecture is %v, want the string \"controlvector\" (is this a model rather than a control vector?)", describe(kv, types, "general.architecture"))
	}
	hint, ok := kv["controlvector.model_hint"].(string)
	if !ok || hint == "" {
		return nil, fmt.Errorf("controlvector.model_hint is %v, want a non-empty string such as \"llama\"", describe(kv, types, "controlvector.model_hint"))
	}
	var layerCount int64
	switch x := kv["controlvector.layer_count"].(type) {
	case uint32:
		layerCount = int64(x)
	case int32:
		layerCount = int64(x)
	default:
		return nil, fmt.Errorf("controlvector.layer_count is %v, want an i32 or u32", describe(kv, types, "controlvector.layer_count"))
	}
	alignment := uint64(ggufDefaultAlignment)
	if a, ok := kv["general.alignment"]; ok {
		x, isU32 := a.(uint32)
		if !isU32 || x == 0 || x&(x-1) != 0 {
			return nil, fmt.Errorf("general.alignment is %v, want a u32 power of two", describe(kv, types, "general.alignment"))
		}
		alignment = uint64(x)
	}

	// Tensor infos.
	type info struct {
		name   string
		n      int
		dim    uint64
		offset uint64
	}
	var infos []info
	seen := map[int]bool{}
	for i := uint64(0); i < nTensors && g.err == nil; i++ {
		name := g.str("tensor name")
		nd := g.u32()
		if g.err != nil {
			break
		}
		if nd != 1 {
			return nil, fmt.Errorf("tensor %s has %d dimensions, want 1 (hidden_size)", name, nd)
		}
		dim := g.u64()
		typ := g.u32()
		off := g.u64()
		if g.err != nil {
			break
		}
		num, ok := strings.CutPrefix(name, "direction.")
		n, err := strconv.Atoi(num)
		if !ok || err != nil || num != strconv.Itoa(n) {
			return nil, fmt.Errorf("tensor %q: a control vector holds only tensors named direction.N", name)
		}
		if n < 1 {
			return nil, fmt.Errorf("tensor %s: layer %d; N must be >= 1 (%s)", name, n, BlockIndexing)
		}
		if seen[n] {
			return nil, fmt.Errorf("tensor %s appears twice", name)
		}
		seen[n] = true
		if typ != ggufF32 {
			return nil, fmt.Errorf("tensor %s has type %d, want 0 (F32)", name, typ)
		}
		if dim == 0 || dim > 1<<20 {
			return nil, fmt.Errorf("tensor %s has %d values", name, dim)
		}
		if len(infos) > 0 && dim != infos[0].dim {
			return nil, fmt.Errorf("tensor %s has %d values, %s has %d: directions must share one length", name, dim, infos[0].name, infos[0].dim)
		}
		if off%alignment != 0 {
			return nil, fmt.Errorf("tensor %s at data offset %d is not aligned to %d bytes", name, off, alignment)
		}
		infos = append(infos, info{name, n, dim, off})
	}
	if g.err != nil {
		return nil, g.err
	}
	if len(infos) == 0 {
		return nil, fmt.Errorf("no direction tensors")
	}
	if layerCount != int64(len(infos)) {
		return nil, fmt.Errorf("controlvector.layer_count is %d, but the file holds %d direction tensors", layerCount, len(infos))
	}
	start := align(uint64(g.n), alignment)
	if start > uint64(len(data)) {
		return nil, fmt.Errorf("the data section starts at byte %d, past the end of the file (%d bytes)", start, len(data))
	}
	body := data[start:]
	sort.Slice(infos, func(i, j int) bool { return infos[i].offset < infos[j].offset })
	for i, t := range infos {
		// offset comes from the file: offset+size may wrap around, so compare without adding to it.
		size := 4 * t.dim
		if t.offset > uint64(len(body)) || size > uint64(len(body))-t.offset {
			return nil, fmt.Errorf("tensor %s (%d bytes at data offset %d) runs past the end of the file", t.name, size, t.offset)
		}
		if i > 0 && infos[i-1].offset+4*infos[i-1].dim > t.offset {
			return nil, fmt.Errorf("tensors %s and %s overlap", infos[i-1].name, t.name)
		}
	}
	v := &Vector{Hook: "hook_resid_post", Info: Info{ModelType: hint, HiddenSize: int(infos[0].dim)}}
	for _, t := range infos {
		vals := make([]float32, t.dim)
		raw := body[t.offset : t.offset+4*t.dim]
		for k := range vals {
			vals[k] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*k:]))
		}
		v.Layers = append(v.Layers, Layer{Index: t.n, Values: vals, TrainAcc: math.NaN(), HeldAcc: math.NaN()})
	}
	sort.Slice(v.Layers, func(i, j int) bool { return v.Layers[i].Index < v.Layers[j].Index })
	return v, nil
}

// describe says what a metadata key holds, for an error message.
func describe(kv map[string]any, types map[string]uint32, key string) string {
	val, ok := kv[key]
	if !ok {
		return "missing"
	}
	names := []string{"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64"}
	t := "?"
	if int(types[key]) < len(names) {
		t = names[types[key]]
	}
	return fmt.Sprintf("%s %v", t, val)
}
