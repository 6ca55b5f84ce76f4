package steer

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/tillerlm/tiller/llama/gguf"
)

// ggufFile builds GGUF bytes piece by piece, so tests can make every kind of bad file.
type ggufFile struct {
	version  uint32
	kv       []ggufKV
	tensors  []ggufTensor
	align    int
	noPad    bool   // leave the data section unaligned
	truncate int    // bytes to cut off the end
	tail     []byte // replaces the data section when set
}

// The metadata value types the tests write.
const (
	gU32    = uint32(gguf.TypeUint32)
	gI32    = uint32(gguf.TypeInt32)
	gF32    = uint32(gguf.TypeFloat32)
	gString = uint32(gguf.TypeString)
)

type ggufKV struct {
	key string
	typ uint32
	val any // written with binary.Write, or a string
}

type ggufTensor struct {
	name   string
	dims   []uint64
	typ    uint32
	values []float32
	offset int64 // -1: the next aligned offset; other negative values wrap to offsets near 2^64
}

func (g ggufFile) bytes() []byte {
	var b bytes.Buffer
	w := func(x any) { binary.Write(&b, binary.LittleEndian, x) }
	str := func(s string) { w(uint64(len(s))); b.WriteString(s) }
	align := g.align
	if align == 0 {
		align = 32
	}
	b.WriteString("GGUF")
	w(g.version)
	w(uint64(len(g.tensors)))
	w(uint64(len(g.kv)))
	for _, kv := range g.kv {
		str(kv.key)
		w(kv.typ)
		if s, ok := kv.val.(string); ok {
			str(s)
		} else {
			w(kv.val)
		}
	}
	var data bytes.Buffer
	for _, t := range g.tensors {
		str(t.name)
		w(uint32(len(t.dims)))
		for _, d := range t.dims {
			w(d)
		}
		w(t.typ)
		off := t.offset
		if off == -1 {
			for data.Len()%align != 0 {
				data.WriteByte(0)
			}
			off = int64(data.Len())
		}
		w(uint64(off))
		binary.Write(&data, binary.LittleEndian, t.values)
	}
	if !g.noPad {
		for b.Len()%align != 0 {
			b.WriteByte(0)
		}
	}
	if g.tail != nil {
		b.Write(g.tail)
	} else {
		b.Write(data.Bytes())
	}
	out := b.Bytes()
	return out[:len(out)-g.truncate]
}

func controlVector(n int, layers ...int) ggufFile {
	g := ggufFile{version: 3, kv: []ggufKV{
		{"general.architecture", gString, "controlvector"},
		{"controlvector.model_hint", gString, "llama"},
		{"controlvector.layer_count", gI32, int32(len(layers))},
	}}
	for _, l := range layers {
		vals := make([]float32, n)
		for i := range vals {
			vals[i] = float32(l) + float32(i)/8
		}
		g.tensors = append(g.tensors, ggufTensor{name: "direction." + strconv.Itoa(l), dims: []uint64{uint64(n)}, typ: 0, values: vals, offset: -1})
	}
	return g
}

// Writing and reading back: the values (times the scale), layers by llama.cpp's block indexing
// (resid_post L is direction.L; resid_pre L is direction.L−1), the hint, layer_count as u32.
func TestGGUFRoundTrip(t *testing.T) {
	c := testConfig(t)
	dir := t.TempDir()
	v := randomVector(c.Dim, 1, 1, 2)
	v.Info.ModelType = "llama"
	path := filepath.Join(dir, "v.gguf")
	if err := WriteGGUF(path, v, 2.5); err != nil {
		t.Fatal(err)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.Hook != "hook_resid_post" || len(got.Layers) != 2 || got.Layers[0].Index != 1 || got.Layers[1].Index != 2 || got.Info.ModelType != "llama" || !strings.HasPrefix(got.Info.Source, "gguf: ") {
		t.Fatalf("read back %+v", got)
	}
	for k := range v.Layers {
		for i, x := range v.Layers[k].Values {
			if got.Layers[k].Values[i] != x*2.5 {
				t.Fatalf("layer %d value %d: %g, want %g", k, i, got.Layers[k].Values[i], x*2.5)
			}
		}
	}
	if err := got.Check(path, c, false); err != nil {
		t.Errorf("check against the model: %v", err)
	}
	raw, _ := os.ReadFile(path)
	if !bytes.Contains(raw, []byte("controlvector.layer_count")) || binary.LittleEndian.Uint32(raw[4:]) != 3 {
		t.Error("not a GGUF v3 control vector")
	}
	// resid_pre of layer 2 is the output of block 1.
	pre := randomVector(c.Dim, 2, 2)
	pre.Hook = "hook_resid_pre"
	if err := WriteGGUF(path, pre, 1); err != nil {
		t.Fatal(err)
	}
	if got, _ := Load(path); got.Layers[0].Index != 1 || got.Layers[0].Values[0] != pre.Layers[0].Values[0] {
		t.Errorf("resid_pre 2 written as %+v", got.Layers[0].Index)
	}
	// What llama.cpp cannot express is refused.
	for _, tc := range []struct {
		hook  string
		layer int
		want  string
	}{
		{"hook_resid_post", 0, "block 0, which llama.cpp never steers"},
		{"hook_resid_pre", 1, "block 0, which llama.cpp never steers"},
		{"hook_mlp_out", 1, "cannot be written as a GGUF control vector"},
	} {
		w := randomVector(c.Dim, 3, tc.layer)
		w.Hook = tc.hook
		if err := WriteGGUF(path, w, 1); err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "llama.cpp") {
			t.Errorf("%s %d: %v, want %q", tc.hook, tc.layer, err, tc.want)
		}
	}
}

// The strict validator: each malformed or non-conforming file is refused with what is wrong.
func TestGGUFValidator(t *testing.T) {
	ok := controlVector(8, 1, 3)
	if v, err := ParseGGUF(ok.bytes()); err != nil || len(v.Layers) != 2 || v.Layers[1].Values[8-1] != 3+7.0/8 {
		t.Fatalf("a good file: %v %+v", err, v)
	}
	u32 := controlVector(8, 2)
	u32.kv[2] = ggufKV{"controlvector.layer_count", gU32, uint32(1)}
	u32.kv = append(u32.kv, ggufKV{"general.alignment", gU32, uint32(64)}, ggufKV{"general.name", gString, "extra keys are fine"})
	u32.align = 64
	if _, err := ParseGGUF(u32.bytes()); err != nil {
		t.Errorf("layer_count as u32, alignment 64: %v", err)
	}
	v2 := controlVector(8, 1)
	v2.version = 2
	if _, err := ParseGGUF(v2.bytes()); err != nil {
		t.Errorf("version 2: %v", err)
	}

	edit := func(f func(g *ggufFile)) []byte {
		g := controlVector(8, 1, 3)
		f(&g)
		return g.bytes()
	}
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"magic", []byte("GGML\x03\x00\x00\x00"), "not a GGUF file"},
		{"empty", nil, "magic: needs 4 bytes at offset 0, the file has 0"},
		{"version", edit(func(g *ggufFile) { g.version = 1 }), "GGUF version 1"},
		{"architecture", edit(func(g *ggufFile) { g.kv[0].val = "llama" }), `general.architecture is string "llama", want the string "controlvector"`},
		{"no architecture", edit(func(g *ggufFile) { g.kv = g.kv[1:] }), "general.architecture is missing"},
		{"no hint", edit(func(g *ggufFile) { g.kv = append(g.kv[:1], g.kv[2]) }), "controlvector.model_hint is missing"},
		{"hint type", edit(func(g *ggufFile) { g.kv[1] = ggufKV{"controlvector.model_hint", gU32, uint32(7)} }), "controlvector.model_hint is u32 7"},
		{"layer_count f32", edit(func(g *ggufFile) { g.kv[2] = ggufKV{"controlvector.layer_count", gF32, float32(2)} }), "controlvector.layer_count is f32 2, want an i32 or u32"},
		{"layer_count wrong", edit(func(g *ggufFile) { g.kv[2].val = int32(31) }), "layer_count is 31, but the file holds 2 direction tensors"},
		{"duplicate key", edit(func(g *ggufFile) { g.kv = append(g.kv, g.kv[1]) }), `metadata key "controlvector.model_hint" appears twice`},
		{"bad value type", edit(func(g *ggufFile) { g.kv = append(g.kv, ggufKV{"x", 99, uint32(0)}) }), "unknown value type 99"},
		{"bad alignment", edit(func(g *ggufFile) { g.kv = append(g.kv, ggufKV{"general.alignment", gU32, uint32(24)}) }), "general.alignment 24 (u32): want a power of two"},
		{"layer 0", edit(func(g *ggufFile) { g.tensors[0].name = "direction.0" }), "layer 0; N must be >= 1 (llama.cpp's block indexing"},
		{"layer -1", edit(func(g *ggufFile) { g.tensors[0].name = "direction.-1" }), "layer -1; N must be >= 1"},
		{"leading zero", edit(func(g *ggufFile) { g.tensors[0].name = "direction.01" }), "only tensors named direction.N"},
		{"other tensor", edit(func(g *ggufFile) { g.tensors[1].name = "token_embd.weight" }), "only tensors named direction.N"},
		{"repeated layer", edit(func(g *ggufFile) { g.tensors[1].name = "direction.1" }), `tensor "direction.1" appears twice`},
		{"f16", edit(func(g *ggufFile) { g.tensors[0].typ = 1 }), "has type F16, want F32"},
		{"2-D", edit(func(g *ggufFile) { g.tensors[0].dims = []uint64{4, 2} }), "2 dimensions, want 1"},
		{"lengths", edit(func(g *ggufFile) { g.tensors[1].dims = []uint64{4}; g.tensors[1].values = g.tensors[1].values[:4] }), "directions must share one length"},
		{"misaligned", edit(func(g *ggufFile) { g.tensors[1].offset = 36 }), "offset 36 is not a multiple of the alignment 32"},
		{"overlap", edit(func(g *ggufFile) { g.tensors[1].offset = 0 }), "overlap"},
		{"truncated data", edit(func(g *ggufFile) { g.truncate = 4 }), "bytes 32 to 64 of the data section lie past the end of the file"},
		{"offset wraps", edit(func(g *ggufFile) { g.tensors[1].offset = -32 }), "offset 18446744073709551584 and size 32 lie past the end of the file"},
		{"offset 2^63", edit(func(g *ggufFile) { g.tensors[0].offset = math.MinInt64 }), "offset 9223372036854775808 and size 32 lie past the end of the file"},
		{"truncated header", controlVector(8, 1).bytes()[:40], "needs 20 bytes at offset 32, the file has 40"},
		{"truncated count", controlVector(8, 1).bytes()[:20], "metadata count: needs 8 bytes at offset 16"},
		{"huge string", append([]byte("GGUF\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00"), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f), "a string of 9223372036854775807 bytes"},
		{"huge counts", append([]byte("GGUF\x03\x00\x00\x00"), bytes.Repeat([]byte{0xff}, 16)...), "more than 24 bytes can hold"},
		{"no tensors", edit(func(g *ggufFile) { g.tensors = nil; g.kv[2].val = int32(0) }), "no direction tensors"},
	}
	for _, c := range cases {
		if _, err := ParseGGUF(c.data); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	// Against a model: the hint, the hidden size, the layers.
	c := testConfig(t)
	for _, tc := range []struct {
		g    ggufFile
		want string
	}{
		{controlVector(c.Dim, 3), "layer 3 is out of range: the model has layers 0 to 2"},
		{controlVector(64, 1), "has 64 values, but the model's hidden_size is 48"},
		{func() ggufFile { g := controlVector(c.Dim, 1); g.kv[1].val = "gemma"; return g }(), `made for model type "gemma"`},
	} {
		v, err := ParseGGUF(tc.g.bytes())
		if err != nil {
			t.Fatal(err)
		}
		if err := v.Check("x.gguf", c, false); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("check: %v, want %q", err, tc.want)
		}
	}
	// NaN in a direction is refused on load.
	bad := controlVector(8, 1)
	bad.tensors[0].values[2] = float32(math.NaN())
	path := filepath.Join(t.TempDir(), "nan.gguf")
	os.WriteFile(path, bad.bytes(), 0o644)
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), "NaN at element 2") {
		t.Errorf("NaN: %v", err)
	}
}

func FuzzParseGGUF(f *testing.F) {
	f.Add(controlVector(8, 1, 3).bytes())
	f.Add(controlVector(4, 2).bytes()[:50])
	// Data offsets near 2^64, where offset+size wraps around to a small number.
	for _, off := range []int64{-32, -64, math.MinInt64, math.MaxInt64 - 31} {
		g := controlVector(8, 1, 3)
		g.tensors[1].offset = off
		f.Add(g.bytes())
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := ParseGGUF(data)
		if err == nil && (len(v.Layers) == 0 || len(v.Layers[0].Values) == 0) {
			t.Errorf("accepted a vector with no values: %+v", v)
		}
	})
}
