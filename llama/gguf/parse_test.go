package gguf

import (
	"encoding/binary"
	"os"
	"reflect"
	"strings"
	"testing"
)

// small is a valid file: a few metadata values and two tensors (F32 and Q8_0).
func small() []byte {
	var b Builder
	b.Add("general.architecture", "llama")
	b.Add("llama.block_count", uint32(2))
	b.Add("tokenizer.ggml.tokens", []string{"a", "b"})
	b.Add("tokenizer.ggml.scores", []float32{0.5, -1})
	b.AddTensor("norm.weight", []int{3}, F32, make([]byte, 12))
	b.AddTensor("blk.0.w", []int{32, 2}, Q8_0, make([]byte, 68))
	return b.Bytes()
}

func TestBuilderRoundTrip(t *testing.T) {
	g, err := Parse(small())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g.Keys, []string{"general.architecture", "llama.block_count", "tokenizer.ggml.tokens", "tokenizer.ggml.scores"}) {
		t.Errorf("keys %q", g.Keys)
	}
	if v := g.Meta["tokenizer.ggml.scores"]; !reflect.DeepEqual(v.V, []float32{0.5, -1}) || v.ElemType != TypeFloat32 {
		t.Errorf("scores %+v", v)
	}
	w, ok := g.Tensor("blk.0.w")
	if !ok || w.Type != Q8_0 || w.Size != 68 || w.Offset != 32 || !reflect.DeepEqual(w.Dims, []int{32, 2}) || w.Elements() != 64 {
		t.Errorf("blk.0.w %+v", w)
	}
	if g.DataStart%32 != 0 || int(g.DataStart)+96 > len(g.Data) {
		t.Errorf("data section at %d of %d bytes", g.DataStart, len(g.Data))
	}
}

// TestParseRejectsDamage: every prefix of a valid file, and each targeted lie in its header, is
// an error that names what is wrong (and never a panic).
func TestParseRejectsDamage(t *testing.T) {
	good := small()
	for n := 0; n < len(good); n++ {
		if n >= len(good)-31 { // the last tensor's padding is not part of it
			break
		}
		if _, err := Parse(good[:n]); err == nil {
			t.Errorf("a file cut to %d of %d bytes parsed", n, len(good))
		}
	}
	le := binary.LittleEndian
	// Offsets of fields in small(): header 24 bytes, then "general.architecture" entry, …
	tensorTable := strings.Index(string(good), "norm.weight") - 8
	type edit func(b []byte)
	u64 := func(at int, v uint64) edit { return func(b []byte) { le.PutUint64(b[at:], v) } }
	u32 := func(at int, v uint32) edit { return func(b []byte) { le.PutUint32(b[at:], v) } }
	normDims := tensorTable + 8 + len("norm.weight")
	for _, tc := range []struct {
		name string
		edit edit
		want string
	}{
		{"version 1", u32(4, 1), "version 1"},
		{"tensor count", u64(8, 1<<40), "more than"},
		{"metadata count", u64(16, 1<<62), "more than"},
		{"string length", u64(24, 1<<40), "string of"},
		{"value type", u32(24+8+len("general.architecture"), 77), "unknown value type 77"},
		{"n_dims 0", u32(normDims, 0), "0 dimensions"},
		{"n_dims 5", u32(normDims, 5), "5 dimensions"},
		{"dimension 0", u64(normDims+4, 0), "is zero or overflows"},
		{"dimension overflow", u64(normDims+4, 1<<63), "is zero or overflows"},
		{"tensor type", u32(normDims+12, 1000), "unknown tensor type 1000"},
		{"unaligned offset", u64(normDims+16, 7), "not a multiple of the alignment"},
		{"offset past the end", u64(normDims+16, 1<<40), "past the end"},
		{"offset wraps", u64(normDims+16, ^uint64(0)&^31), "past the end"},
		{"block does not divide", u64(normDims+4, 3), "(F32)"},
	} {
		b := append([]byte(nil), good...)
		tc.edit(b)
		_, err := Parse(b)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			if tc.want == "(F32)" && err == nil {
				continue // F32 blocks of 1 divide every dimension: nothing to refuse
			}
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
	q8 := func(dims []int) []byte {
		var b Builder
		b.AddTensor("w", dims, Q8_0, make([]byte, 34))
		return b.Bytes()
	}
	if _, err := Parse(q8([]int{16, 2})); err == nil || !strings.Contains(err.Error(), "do not divide the innermost dimension 16") {
		t.Errorf("Q8_0 rows of 16: %v", err)
	}
	var b Builder
	b.Add("k", "x")
	b.Add("k", "y")
	if _, err := Parse(b.Bytes()); err == nil || !strings.Contains(err.Error(), `"k" appears twice`) {
		t.Errorf("duplicate key: %v", err)
	}
	b = Builder{}
	b.AddTensor("t", []int{1}, F32, make([]byte, 4))
	b.AddTensor("t", []int{1}, F32, make([]byte, 4))
	if _, err := Parse(b.Bytes()); err == nil || !strings.Contains(err.Error(), `"t" appears twice`) {
		t.Errorf("duplicate tensor: %v", err)
	}
	for _, a := range []any{uint32(0), uint32(24), "32", uint64(32)} {
		b = Builder{}
		b.Add("general.alignment", a)
		if _, err := Parse(b.Bytes()); err == nil || !strings.Contains(err.Error(), "general.alignment") {
			t.Errorf("general.alignment %v (%T): %v", a, a, err)
		}
	}
	b = Builder{}
	b.Add("general.alignment", uint32(64))
	b.AddTensor("t", []int{3}, F32, make([]byte, 12))
	b.AddTensor("u", []int{3}, F32, make([]byte, 12))
	g, err := Parse(b.Bytes())
	if err != nil || g.Alignment != 64 || g.DataStart%64 != 0 || g.Tensors[1].Offset != 64 {
		t.Errorf("alignment 64: %v %+v", err, g)
	}
	b = Builder{}
	b.Add("flag", true)
	bad := b.Bytes()
	bad[24+8+len("flag")+4] = 2
	if _, err := Parse(bad); err == nil || !strings.Contains(err.Error(), "bool value 2") {
		t.Errorf("bool 2: %v", err)
	}
	b = Builder{}
	b.Add("arr", []int32{1, 2})
	bad = b.Bytes()
	le.PutUint32(bad[24+8+3+4:], uint32(TypeArray))
	if _, err := Parse(bad); err == nil || !strings.Contains(err.Error(), "array of arrays") {
		t.Errorf("array of arrays: %v", err)
	}
	le.PutUint32(bad[24+8+3+4:], uint32(TypeInt32))
	le.PutUint64(bad[24+8+3+8:], 1<<60)
	if _, err := Parse(bad); err == nil || !strings.Contains(err.Error(), "cannot fit") {
		t.Errorf("a huge array: %v", err)
	}
}

// FuzzParse: whatever the bytes, Parse returns an error or a file whose every tensor lies inside
// it and dequantizes without a panic.
func FuzzParse(f *testing.F) {
	f.Add(small())
	if b, err := os.ReadFile("testdata/dequant.gguf"); err == nil {
		f.Add(b[:4096])
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := Parse(data)
		if err != nil {
			return
		}
		for i := range g.Tensors {
			tt := &g.Tensors[i]
			b := g.Bytes(tt)
			if n := tt.Elements(); Supported(tt.Type) && n <= 1<<16 {
				if err := Dequantize(tt.Type, b, make([]float32, n)); err != nil {
					t.Fatalf("tensor %q parsed but does not dequantize: %v", tt.Name, err)
				}
			}
		}
	})
}
